"""systemd's service notification protocol (``sd_notify``), implemented in a few lines over a unix
datagram socket, for ``Type=notify`` units (``deploy/*.service``).

The protocol: the service manager passes ``NOTIFY_SOCKET`` (a filesystem path, or ``@name`` for the
abstract namespace) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``). The service
sends newline-separated ``KEY=value`` datagrams: ``READY=1`` once it can serve, ``STATUS=...`` for
``systemctl status``, ``WATCHDOG=1`` at least every ``WATCHDOG_USEC`` (we ping at half of it, from the
event loop, so a stuck loop misses its pings and systemd restarts the service), ``STOPPING=1`` when a
drain begins and ``EXTEND_TIMEOUT_USEC=...`` while a long drain is still making progress.

Library code never reads the environment (DESIGN.md): the entry point builds a :class:`NotifyConfig`
with :meth:`NotifyConfig.from_environ` (passing ``os.environ``) and hands it down. Without
``NOTIFY_SOCKET`` every call is a no-op, so the same code runs in a terminal, in tests and under systemd.
A notification that cannot be delivered is logged once and otherwise ignored: systemd going away must
never take the service down with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)

# Environment variables of the protocol; the entry point removes them once read (sd_notify's
# ``unset_environment``) so that child processes do not notify on the service's behalf.
NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"
PROTOCOL_ENV = (NOTIFY_SOCKET_ENV, WATCHDOG_USEC_ENV, WATCHDOG_PID_ENV)

WATCHDOG_FRACTION = 0.5  # ping at this fraction of WATCHDOG_USEC (systemd's recommendation)
STATUS_INTERVAL_S = 5.0  # STATUS= refresh period when there is no (shorter) watchdog period
USEC_PER_S = 1_000_000


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    """Where to notify and how often the watchdog wants a ping (``None``: not under systemd / no watchdog)."""

    socket_path: str | None = None
    watchdog_usec: int | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], pid: int | None = None) -> NotifyConfig:
        """Read the protocol's variables from ``environ`` (the entry point passes ``os.environ``).

        ``WATCHDOG_USEC`` counts only when ``WATCHDOG_PID`` is unset or is this process (``pid``,
        default ``os.getpid()``), as sd_watchdog_enabled() does. Unusable values disable the feature
        rather than fail: a wrongly set watchdog must not stop the service from starting.
        """
        path = environ.get(NOTIFY_SOCKET_ENV) or None
        if path is not None and not (path.startswith(("/", "@"))):
            log.warning("ignoring NOTIFY_SOCKET that is neither a path nor an abstract socket", value=path)
            path = None
        usec: int | None = None
        raw = environ.get(WATCHDOG_USEC_ENV)
        owner = environ.get(WATCHDOG_PID_ENV)
        if raw:
            try:
                usec = int(raw)
            except ValueError:
                usec = None
            if usec is not None and usec <= 0:
                usec = None
            if owner:
                try:
                    if int(owner) != (os.getpid() if pid is None else pid):
                        usec = None
                except ValueError:
                    usec = None
        return cls(path, usec)

    @property
    def watchdog_interval_s(self) -> float | None:
        """Seconds between WATCHDOG=1 pings: half the watchdog timeout."""
        if self.watchdog_usec is None:
            return None
        return self.watchdog_usec / USEC_PER_S * WATCHDOG_FRACTION


def socket_address(path: str) -> str:
    """The ``AF_UNIX`` address for a ``NOTIFY_SOCKET`` value: ``@name`` is the abstract ``\\0name``."""
    return "\0" + path[1:] if path.startswith("@") else path


class Notifier:
    """Sends notifications to the service manager and keeps the watchdog fed from the event loop.

    ``async with Notifier(config, status=fn)``: :meth:`start` begins a named heartbeat task that sends
    ``WATCHDOG=1`` every :attr:`NotifyConfig.watchdog_interval_s` and ``STATUS=fn()`` whenever it
    changes. Closing twice is safe; a closed notifier cannot be restarted.
    """

    def __init__(self, config: NotifyConfig, status: Callable[[], str] | None = None) -> None:
        self.config = config
        self.status_fn = status
        self.sent: list[str] = []  # last messages, newest last (diagnostics; bounded)
        self._sock: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_status: str | None = None
        self._warned = False
        self._state = "new"

    @property
    def enabled(self) -> bool:
        return self.config.socket_path is not None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._state != "new":
            raise RuntimeError(f"notifier cannot start: it is {self._state}")
        self._state = "running"
        if not self.enabled:
            return
        period = self.config.watchdog_interval_s
        if period is not None or self.status_fn is not None:
            self._task = asyncio.create_task(self._heartbeat(), name="sd-notify-heartbeat")

    async def aclose(self) -> None:
        """Stop the heartbeat and close the socket. Safe twice."""
        if self._state == "closed":
            return
        self._state = "closed"
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def __aenter__(self) -> Notifier:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -------------------------------------------------------------- notifications
    def notify(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields in one datagram. True when delivered (False when disabled)."""
        path = self.config.socket_path
        if path is None or not fields:
            return False
        message = "\n".join(fields)
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(message.encode("utf-8", errors="replace"), socket_address(path))
        except OSError as exc:
            if not self._warned:  # the manager went away or the socket is full: say so once
                self._warned = True
                log.warning("sd_notify failed", socket=path, error=repr(exc))
            return False
        self.sent.append(message)
        del self.sent[:-64]
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: the service can serve now."""
        return self.notify("READY=1", *self._status_field(status))

    def status(self, text: str) -> bool:
        """``STATUS=text`` (one line, shown by ``systemctl status``)."""
        return self.notify(*self._status_field(text))

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: a drain or shutdown has begun."""
        return self.notify("STOPPING=1", *self._status_field(status))

    def extend_timeout(self, seconds: float) -> bool:
        """``EXTEND_TIMEOUT_USEC``: the current start/stop phase needs ``seconds`` more from now."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(1, round(seconds * USEC_PER_S))}")

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the event loop is alive."""
        return self.notify("WATCHDOG=1")

    def _status_field(self, text: str | None) -> list[str]:
        if text is None:
            return []
        line = " ".join(text.split())  # one line, as systemctl shows it
        self._last_status = line
        return [f"STATUS={line}"]

    async def _heartbeat(self) -> None:
        """WATCHDOG=1 every watchdog period; STATUS= when the status text changes."""
        watchdog_s = self.config.watchdog_interval_s
        period = min(watchdog_s, STATUS_INTERVAL_S) if watchdog_s is not None else STATUS_INTERVAL_S
        while True:
            fields: list[str] = []
            if watchdog_s is not None:
                fields.append("WATCHDOG=1")
            if self.status_fn is not None:
                try:
                    text = " ".join(self.status_fn().split())
                except Exception as exc:  # a broken status line must not starve the watchdog
                    log.warning("sd_notify status failed", error=repr(exc))
                    text = self._last_status or ""
                if text and text != self._last_status:
                    fields += self._status_field(text)
            self.notify(*fields)
            await asyncio.sleep(period)
