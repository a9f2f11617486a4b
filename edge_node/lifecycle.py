"""The edge daemon's service lifecycle: its one-line status, and the graceful drain after SIGTERM.

``seminote-edge serve`` (``edge_node.cli.serve``) runs these around the HTTP server: ``READY=1`` with
:func:`service_status` once it listens, then on SIGTERM ``STOPPING=1``, no new sessions (``/readyz``
503), the control plane told at once, and :func:`drain` until the open sessions have finished or
``service.drain_timeout_s`` has passed, extending systemd's stop timeout (``EXTEND_TIMEOUT_USEC``) while
it waits. Sessions still open at the deadline are then ended normally (final events, no error).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from prometheus_client import CollectorRegistry, Gauge

from .sdnotify import Notifier

DRAIN_POLL_S = 0.2  # how often the drain looks at the number of open sessions
EXTEND_PERIOD_S = 5.0  # EXTEND_TIMEOUT_USEC is renewed this often while a drain waits
EXTEND_MARGIN_S = 10.0  # each renewal grants the period plus this margin, so one late tick is no kill


class DrainableSessions(Protocol):
    """What the lifecycle needs of ``edge_node.sessions.SessionManager``."""

    @property
    def count(self) -> int: ...

    @property
    def accepting(self) -> bool: ...


def service_status(sessions: DrainableSessions, draining: bool = False) -> str:
    """The STATUS= line: ``serving 3 sessions``, ``full: 64 sessions``, ``draining: 2 sessions left``."""
    n = sessions.count
    noun = "session" if n == 1 else "sessions"
    if draining:
        return f"draining: {n} {noun} left"
    return f"serving {n} {noun}" if sessions.accepting else f"not accepting: {n} {noun}"


async def drain(
    sessions: DrainableSessions, timeout_s: float, notifier: Notifier, cut_short: asyncio.Event
) -> int:
    """Wait until no session is open, ``timeout_s`` has passed or ``cut_short`` is set (a second
    signal). Keeps systemd's stop timeout ahead of the wait. Returns the sessions still open."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    next_extend = loop.time()
    while sessions.count and not cut_short.is_set():
        now = loop.time()
        remaining = deadline - now
        if remaining <= 0:
            break
        if now >= next_extend:
            next_extend = now + EXTEND_PERIOD_S
            notifier.extend_timeout(EXTEND_PERIOD_S + EXTEND_MARGIN_S)
            notifier.status(f"{service_status(sessions, draining=True)}, {remaining:.0f} s to the deadline")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(cut_short.wait(), min(DRAIN_POLL_S, remaining))
    return sessions.count


def register_lifecycle_metrics(registry: CollectorRegistry, sessions: DrainableSessions) -> Gauge:
    """``seminote_edge_accepting``: 1 while new sessions are admitted (0 when full, cordoned or draining)."""
    gauge = Gauge("seminote_edge_accepting", "1 while the edge admits new sessions", registry=registry)
    gauge.set_function(lambda: 1.0 if sessions.accepting else 0.0)
    return gauge
