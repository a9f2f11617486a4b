"""The relay: publishes the outbox's rows, in order, to NATS JetStream, and forgets them once acked.

Each row goes to ``<subject_prefix>.<edge_id>.<kind>`` with ``Nats-Msg-Id`` = the row's globally
unique id (:meth:`OutboxRow.msg_id`), so JetStream drops a re-publish inside its duplicate window and
the control plane's ingest (which upserts by message id) drops one after it. Each round publishes a
window of rows concurrently, but at most one row per session, and a session's next row only after
the previous one was acked: a row is never stored in the stream ahead of an older row of its
session, which keeps every session's results in order. Acked rows are deleted after each round; if
the process dies between the ack and the delete, the rows are published again and deduplicated.

While NATS is away the relay backs off exponentially (``backoff_initial_s`` .. ``backoff_max_s``)
and keeps the rows; the connection is opened with no outbound buffer, so a publish while
disconnected fails at once instead of queueing a stale copy. The relay is its own task and touches
SQLite only through the outbox's worker thread, so it never blocks the audio path.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from types import TracebackType
from typing import Literal

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from .errors import SyncError
from .outbox import Outbox, OutboxRow
from .settings import SyncSettings

__all__ = ["Relay"]

log = structlog.get_logger(__name__)

IDLE_POLL_S = 1.0
"""How long the relay sleeps on an empty outbox before looking again (it is woken on new rows)."""

CONNECT_TIMEOUT_S = 2.0
DRAIN_POLL_S = 0.05
RECONNECT_WAIT_S = 0.25

class Relay:
    """Moves outbox rows to JetStream (see module docstring). Owns one named task."""

    def __init__(self, settings: SyncSettings, outbox: Outbox, edge_id: str) -> None:
        self.settings = settings
        self.outbox = outbox
        self.edge_id = edge_id
        self.metrics = outbox.metrics
        self.published_rows = 0
        self.duplicate_acks = 0
        self._nc: NatsClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._state: Literal["new", "running", "closed"] = "new"
        self._backoff_s = settings.backoff_initial_s

    async def start(self) -> None:
        """Start the relay task; it connects (and reconnects) to NATS by itself."""
        if self._state == "closed":
            raise SyncError("relay was closed; create a new one")
        if self._state == "running":
            return
        self._state = "running"
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def aclose(self) -> None:
        """Stop publishing and close the NATS connection. Rows not yet acked stay in the outbox."""
        if self._state == "closed":
            return
        self._state = "closed"
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close_nats()

    async def __aenter__(self) -> Relay:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def drain(self, timeout_s: float) -> bool:
        """Flush the outbox and wait (at most ``timeout_s``) until the relay has published every row:
        the shutdown step "flush the outbox". Rows left over stay on disk for the next start."""
        await self.outbox.flush()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.outbox.rows and self._state == "running":
            if loop.time() >= deadline:
                log.warning("relay stopped with rows left in the outbox", outbox_rows=self.outbox.rows)
                return False
            await asyncio.sleep(DRAIN_POLL_S)
        return self.outbox.rows == 0

    def subject(self, row: OutboxRow) -> str:
        return f"{self.settings.subject_prefix}.{self.edge_id}.{row.kind}"

    # -- the loop -----------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                js = await self._connect()
                rows = await self.outbox.fetch(self.settings.relay_read_rows)
                if not rows:
                    await self.outbox.wait_rows(IDLE_POLL_S)
                    continue
                while rows:  # windows from one read, so SQLite is read once per relay_read_rows rows
                    started = asyncio.get_running_loop().time()
                    sent = len(rows)
                    rows = await self._publish_rows(js, rows)
                    self._backoff_s = self.settings.backoff_initial_s
                    await self._pace(sent - len(rows), started)
            except asyncio.CancelledError:
                raise
            except _RETRYABLE as exc:
                self.metrics.publish_failures.inc()
                await self._back_off(exc)
            except Exception as exc:
                # Unknown failures are retried too: the relay must outlive anything but cancellation.
                log.exception("relay round failed")
                await self._back_off(exc)

    async def _pace(self, published: int, started: float) -> None:
        """Keep a catch-up under ``relay_max_rows_per_s``: a backlog must not starve the audio path
        (the relay shares the event loop, the GIL and the CPU with live sessions)."""
        limit = self.settings.relay_max_rows_per_s
        if limit <= 0 or published <= 0:
            return
        wait_s = published / limit - (asyncio.get_running_loop().time() - started)
        if wait_s > 0:
            await asyncio.sleep(wait_s)

    async def _publish_rows(self, js: JetStreamContext, rows: list[OutboxRow]) -> list[OutboxRow]:
        """Publish one window: the oldest unacked row of each session, concurrently; delete the acked;
        return the rows still to publish (in order).

        At most one row per session is in flight, and a session's next row is only sent after the one
        before it was acked, so a failure can never let a later row of a session overtake an earlier
        one in the stream. Different sessions proceed in parallel.
        """
        window: list[OutboxRow] = []
        sessions: set[str] = set()
        for row in rows:
            if row.session_id in sessions:
                continue  # waits for its predecessor's ack (a later round)
            sessions.add(row.session_id)
            window.append(row)
            if len(window) >= self.settings.publish_window:
                break
        outcomes = await asyncio.gather(*(self._publish(js, row) for row in window), return_exceptions=True)
        acked = [row.id for row, outcome in zip(window, outcomes, strict=True) if outcome is None]
        # Shielded: a cancel (shutdown) must not lose the knowledge that these rows are stored.
        await asyncio.shield(self.outbox.delete(acked))
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        done = set(acked)
        return [row for row in rows if row.id not in done]

    async def _publish(self, js: JetStreamContext, row: OutboxRow) -> None:
        ack = await js.publish(
            self.subject(row),
            row.payload,
            timeout=self.settings.publish_timeout_s,
            stream=self.settings.stream_name,
            headers={"Nats-Msg-Id": row.msg_id(self.edge_id, self.outbox.epoch)},
        )
        self.published_rows += 1
        self.metrics.published_rows.inc()
        self.metrics.published_results.inc(row.results)
        if ack.duplicate:
            self.duplicate_acks += 1
            self.metrics.duplicate_acks.inc()

    async def _back_off(self, exc: BaseException) -> None:
        delay = self._backoff_s * (0.5 + random.random() / 2)
        log.warning("relay waiting for NATS", error=repr(exc), retry_in_s=round(delay, 3),
                    outbox_rows=self.outbox.rows)
        self._backoff_s = min(self._backoff_s * 2, self.settings.backoff_max_s)
        await asyncio.sleep(delay)

    # -- NATS connection ----------------------------------------------------------------------------

    async def _connect(self) -> JetStreamContext:
        if self._nc is not None and not self._nc.is_closed:
            return self._nc.jetstream()
        self._nc = await nats.connect(
            servers=list(self.settings.nats_urls),
            name=f"seminote-relay-{self.edge_id}",
            connect_timeout=CONNECT_TIMEOUT_S,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=RECONNECT_WAIT_S,
            pending_size=0,  # no outbound buffer while disconnected: fail fast, keep rows in the outbox
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            error_cb=self._on_error,
        )
        self.metrics.nats_connected.set(1)
        log.info("relay connected to NATS", url=str(self._nc.connected_url))
        return self._nc.jetstream()

    async def _close_nats(self) -> None:
        nc, self._nc = self._nc, None
        self.metrics.nats_connected.set(0)
        if nc is not None and not nc.is_closed:
            try:
                await nc.close()
            except Exception:
                log.debug("closing the NATS connection failed", exc_info=True)

    async def _on_disconnected(self) -> None:
        self.metrics.nats_connected.set(0)

    async def _on_reconnected(self) -> None:
        self.metrics.nats_connected.set(1)

    async def _on_error(self, exc: Exception) -> None:
        log.debug("NATS client error", error=repr(exc))


_RETRYABLE: tuple[type[BaseException], ...] = (
    nats.errors.Error,
    nats.js.errors.Error,
    TimeoutError,
    OSError,
)
