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
disconnected fails at once instead of queueing a stale copy.

The relay reads and deletes through its own :class:`~edge_node.outbox.OutboxReader` connection. The
edge runs it in a child process of its own (:mod:`edge_node.relay_process`), so its publish/ack
handling, SQLite reads and NATS protocol work never share an event loop, a GIL or a scheduling
priority with the audio path. It counts what it did in :class:`RelayStats`, which that process
reports to the edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from .errors import SyncError
from .outbox import OutboxReader, OutboxRow
from .settings import SyncSettings

__all__ = ["Relay", "RelayStats"]

log = structlog.get_logger(__name__)

IDLE_POLL_S = 0.05
"""How often the relay looks whether anyone wrote to an empty outbox (:meth:`OutboxReader.changed`):
the longest a result written to an idle outbox waits before it is published."""

CONNECT_TIMEOUT_S = 2.0
DRAIN_POLL_S = 0.05
RECONNECT_WAIT_S = 0.25

@dataclass(slots=True)
class RelayStats:
    """What one relay did since it started (cumulative; the edge turns them into its metrics)."""

    published_rows: int = 0
    published_results: int = 0
    duplicate_acks: int = 0
    publish_failures: int = 0
    nats_connected: bool = False


class Relay:
    """Moves outbox rows to JetStream (see module docstring). Owns one named task."""

    def __init__(self, settings: SyncSettings, edge_id: str) -> None:
        self.settings = settings
        self.edge_id = edge_id
        self.outbox = OutboxReader(settings.outbox_path)
        self.stats = RelayStats()
        self._nc: NatsClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._state: Literal["new", "running", "closed"] = "new"
        self._backoff_s = settings.backoff_initial_s

    async def start(self) -> None:
        """Open the outbox and start the relay task; it connects (and reconnects) to NATS by itself."""
        if self._state == "closed":
            raise SyncError("relay was closed; create a new one")
        if self._state == "running":
            return
        await self.outbox.start()
        self._state = "running"
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def aclose(self) -> None:
        """Stop publishing, close the NATS connection and the outbox. Rows not yet acked stay there."""
        if self._state == "closed":
            return
        self._state = "closed"
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close_nats()
        await self.outbox.aclose()

    async def __aenter__(self) -> Relay:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def drain(self, timeout_s: float) -> int:
        """Wait (at most ``timeout_s``) until the relay has published every row in the outbox: the
        shutdown step "flush the outbox". Returns the rows left, which stay on disk for the next start."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (left := await self.outbox.count()) and self._state == "running":
            if loop.time() >= deadline:
                log.warning("relay stopped with rows left in the outbox", outbox_rows=left)
                return left
            await asyncio.sleep(DRAIN_POLL_S)
        return left

    def subject(self, row: OutboxRow) -> str:
        return f"{self.settings.subject_prefix}.{self.edge_id}.{row.kind}"

    # -- the loop -----------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                js = await self._connect()
                await self.outbox.changed()  # before the read: a write meanwhile shows as a change
                rows = await self.outbox.fetch(self.settings.relay_read_rows)
                if not rows:
                    # The writers are other processes: there is no event to wait on, only the file.
                    while not await self.outbox.changed():  # noqa: ASYNC110
                        await asyncio.sleep(IDLE_POLL_S)
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
                self.stats.publish_failures += 1
                await self._back_off(exc)
            except Exception as exc:
                # Unknown failures are retried too: the relay must outlive anything but cancellation.
                log.exception("relay round failed")
                await self._back_off(exc)

    async def _pace(self, published: int, started: float) -> None:
        """Keep a catch-up under ``relay_max_rows_per_s``: after an outage every edge catches up at
        once, and a bounded pace keeps that from flooding NATS and the ingest, and bounds the CPU a
        catch-up takes from the edge's machine."""
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
        self.stats.published_rows += 1
        self.stats.published_results += row.results
        if ack.duplicate:
            self.stats.duplicate_acks += 1

    async def _back_off(self, exc: BaseException) -> None:
        delay = self._backoff_s * (0.5 + random.random() / 2)
        log.warning("relay waiting for NATS", error=repr(exc), retry_in_s=round(delay, 3))
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
        self.stats.nats_connected = True
        log.info("relay connected to NATS", url=str(self._nc.connected_url))
        return self._nc.jetstream()

    async def _close_nats(self) -> None:
        nc, self._nc = self._nc, None
        self.stats.nats_connected = False
        if nc is not None and not nc.is_closed:
            try:
                await nc.close()
            except Exception:
                log.debug("closing the NATS connection failed", exc_info=True)

    async def _on_disconnected(self) -> None:
        self.stats.nats_connected = False

    async def _on_reconnected(self) -> None:
        self.stats.nats_connected = True

    async def _on_error(self, exc: Exception) -> None:
        log.debug("NATS client error", error=repr(exc))


_RETRYABLE: tuple[type[BaseException], ...] = (
    nats.errors.Error,
    nats.js.errors.Error,
    TimeoutError,
    OSError,
)
