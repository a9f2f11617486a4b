"""The session manager: admission (tickets, capacity), the open sessions, timeouts and teardown.

Opening a session runs every check synchronously before the first ``await`` (ticket, offer, capacity,
single use, slot reservation), so concurrent offers cannot race past the limits. Two named tasks run
for the manager's lifetime: the *watchdog* (every ``watchdog_interval_s``: ends sessions with no
audio, silent wires, or past their maximum length; syncs receive counters to the metrics) and the
*reaper* (ends the sessions that asked to be closed: client ``stop``, flood, failed peer, closed
channel). A vanished client is thus ended within ``media_timeout_s + watchdog_interval_s``.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import hashlib
import hmac
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .audio import CHUNK_SAMPLES
from .errors import (
    CapacityExceeded,
    EdgeDraining,
    EdgeOverloaded,
    SessionExists,
    SessionNotFound,
    TicketForged,
    TicketReplayed,
)
from .metrics import EdgeMetrics
from .outbox import Outbox
from .pipeline import StreamingPipeline
from .scoring import PieceLibrary
from .session import PracticeSession, validate_offer
from .settings import EdgeSettings
from .tickets import ReplayGuard, TicketClaims, verify_ticket

log = structlog.get_logger(__name__)

CLOSE_TIMEOUT_S = 10.0  # one peer connection's teardown, at most (a starved machine needs seconds)
WARM_UP_CHUNKS = 10
LAG_HALF_LIFE_S = 2.0  # how long an event-loop lag spike keeps counting against admission


def _load_malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _load_malloc_trim()


def release_freed_memory() -> None:
    """Hand memory freed by closed sessions (codec, DTLS and SRTP contexts) back to the OS; without
    it glibc keeps it in its arenas and the edge's RSS ratchets up over the first hundreds of sessions."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def warm_up(settings: EdgeSettings) -> None:
    """Run the pipeline once on silence so its numba kernels are compiled (or loaded from the cache)
    before the first student plays: otherwise their first notes wait seconds for the JIT."""
    pipeline = StreamingPipeline(mode=settings.analysis.default_mode, settings=settings.analysis)
    pipeline.process(np.zeros(WARM_UP_CHUNKS * CHUNK_SAMPLES, dtype=np.float32))
    pipeline.finish()


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", errors="replace")).digest()


class SessionManager:
    """Owns every practice session of one edge."""

    def __init__(
        self,
        settings: EdgeSettings,
        public_keys: Sequence[Ed25519PublicKey],
        metrics: EdgeMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.server = settings.server
        self.edge_id = settings.edge_id
        self.public_keys = list(public_keys)
        self.metrics = metrics or EdgeMetrics()
        self.metrics.sessions_max.set(self.server.max_sessions)
        self.replay_guard = ReplayGuard(self.server.replay_guard_max_entries)
        self.pieces = PieceLibrary(settings.analysis.pieces_dir)  # shared by sessions (issue 7)
        self.sessions: dict[str, PracticeSession] = {}
        self._reserved = 0
        self.loop_lag_s = 0.0  # how late the watchdog's last wake-up was: the edge's CPU headroom
        self._closed_since_trim = 0
        self._draining = False
        self._state = "new"
        self._close_queue: asyncio.Queue[tuple[PracticeSession, str]] = asyncio.Queue()
        self._closing: dict[str, asyncio.Task[None]] = {}  # reaper's teardowns in progress
        self._tasks: list[asyncio.Task[None]] = []
        self.results: Outbox | None = None  # result sync (issue 5): every session records here

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._state != "new":
            raise RuntimeError(f"session manager cannot start: it is {self._state}")
        warm_up(self.settings)
        self._state = "running"
        self._tasks = [
            asyncio.create_task(self._watchdog(), name="edge-session-watchdog"),
            asyncio.create_task(self._reaper(), name="edge-session-reaper"),
        ]

    async def aclose(self) -> None:
        """Stop taking sessions, end every open one, stop the manager's tasks. Safe twice."""
        if self._state == "closed":
            return
        self._draining = True
        self._state = "closed"
        await self.close_all("shutdown")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._closing.values(), return_exceptions=True)
        self._tasks = []

    async def __aenter__(self) -> SessionManager:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def drain(self) -> None:
        """Take no new sessions (``/readyz`` turns 503); open ones continue."""
        self._draining = True

    # --- control-plane agent (issue 4): uncordon ------------------------------------------------
    def undrain(self) -> None:
        """Take new sessions again (the control plane uncordoned this edge); no-op once closed."""
        if self._state != "closed":
            self._draining = False
    # --- end control-plane agent ------------------------------------------------------------------

    @property
    def overloaded(self) -> bool:
        limit_ms = self.server.overload_lag_ms
        return limit_ms > 0 and self.loop_lag_s * 1000.0 > limit_ms

    @property
    def accepting(self) -> bool:
        return (
            self._state == "running" and not self._draining and not self.overloaded
            and len(self.sessions) + self._reserved < self.server.max_sessions
        )

    @property
    def count(self) -> int:
        return len(self.sessions)

    # ------------------------------------------------------------- sessions
    async def open(self, token: str, offer: str) -> tuple[PracticeSession, str]:
        """Admit a WHIP offer: returns the session and its SDP answer.

        Raises :class:`~edge_node.errors.TicketError` or :class:`SessionError` subclasses.
        """
        now = time.time()
        claims = verify_ticket(token, self.public_keys, self.edge_id, now)
        validate_offer(offer)
        if claims.ticket_id in self.replay_guard:
            raise TicketReplayed("ticket was already used")
        if self._state != "running" or self._draining:
            raise EdgeDraining(self.server.retry_after_s)
        if len(self.sessions) + self._reserved >= self.server.max_sessions:
            raise CapacityExceeded(self.server.max_sessions, self.server.retry_after_s)
        if self.overloaded:
            raise EdgeOverloaded(self.loop_lag_s, self.server.retry_after_s)
        if claims.session_id in self.sessions:
            raise SessionExists(f"session {claims.session_id!r} is already open")
        self.replay_guard.check_and_remember(claims, now)
        return await self._create(claims, token, offer)

    async def _create(self, claims: TicketClaims, token: str, offer: str) -> tuple[PracticeSession, str]:
        self._reserved += 1
        session = PracticeSession(
            claims, token_digest(token), self.server, self.settings.analysis, self.metrics,
            self.request_close,
        )
        session.results = self.results  # result sync (issue 5)
        session.pieces = self.pieces  # score following (issue 7)
        if claims.piece is not None:
            session.follow_piece(claims.piece)
        try:
            answer = await session.answer(offer)
        except BaseException:
            self._reserved -= 1
            await asyncio.shield(session.aclose("offer_failed"))
            raise
        self._reserved -= 1
        self.sessions[session.id] = session
        self.metrics.sessions_opened.inc()
        self.metrics.sessions_active.set(len(self.sessions))
        session.log.info("session opened", mode=session.pipeline.mode, piece=session.piece)
        return session, answer

    def get(self, session_id: str, token: str) -> PracticeSession:
        """The open session ``session_id``, if ``token`` is the ticket that opened it."""
        session = self.sessions.get(session_id)
        if session is None:
            raise SessionNotFound(f"no open session {session_id!r}")
        if not hmac.compare_digest(session.token_digest, token_digest(token)):
            raise TicketForged("this is not the ticket that opened the session")
        return session

    async def close(self, session: PracticeSession, reason: str) -> None:
        """End one session and forget it. Closing an already closed session is a no-op."""
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]
            self.metrics.sessions_active.set(len(self.sessions))
            self.metrics.sessions_closed.labels(reason).inc()
        self._closed_since_trim += 1
        try:
            await asyncio.wait_for(session.aclose(reason), CLOSE_TIMEOUT_S)
        except Exception as exc:  # a broken peer must not stop the reaper or the shutdown
            session.log.warning("session teardown failed", error=repr(exc))

    async def close_all(self, reason: str) -> None:
        sessions = list(self.sessions.values())
        await asyncio.gather(*(self.close(s, reason) for s in sessions))

    def request_close(self, session: PracticeSession, reason: str) -> None:
        """Called by a session (from callbacks that cannot await) to be ended by the reaper."""
        self._close_queue.put_nowait((session, reason))

    def snapshot(self) -> list[dict[str, Any]]:
        return [s.info() for s in self.sessions.values()]

    # ---------------------------------------------------------------- tasks
    async def _watchdog(self) -> None:
        interval = self.server.watchdog_interval_s
        while True:
            before = time.monotonic()
            await asyncio.sleep(interval)
            now = time.monotonic()
            # A spike is remembered with a half-life, so admission does not flap between wake-ups.
            decayed = self.loop_lag_s * 0.5 ** ((now - before) / LAG_HALF_LIFE_S)
            self.loop_lag_s = max(0.0, now - before - interval, decayed)
            self.metrics.loop_lag.set(self.loop_lag_s)
            self.replay_guard.prune(time.time())
            if self._closed_since_trim:
                self._closed_since_trim = 0
                release_freed_memory()
            for session in list(self.sessions.values()):
                session.sync_metrics()
                session.flush_stale_feedback(now)
                reason = session.expired(now)
                if reason is not None:
                    self.request_close(session, reason)

    def _forget_closing(self, task: asyncio.Task[None]) -> None:
        for sid, t in list(self._closing.items()):
            if t is task:
                del self._closing[sid]

    async def _reaper(self) -> None:
        """Ends sessions that asked to be closed, concurrently: one slow teardown (a peer that does
        not answer) must not hold up the others."""
        while True:
            session, reason = await self._close_queue.get()
            if session.state in ("closing", "closed") or session.id in self._closing:
                continue
            task = asyncio.create_task(self.close(session, reason), name=f"edge-close-{session.id}")
            self._closing[session.id] = task
            task.add_done_callback(self._forget_closing)

