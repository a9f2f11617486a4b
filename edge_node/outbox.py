"""The edge's SQLite outbox of session results, waiting to be relayed to NATS JetStream.

A session hands its events to :meth:`Outbox.record_events` (and its summary to
:meth:`Outbox.record_summary`). Those calls only append to memory, so the audio path never waits
on disk; a flusher task writes what accumulated every ``flush_interval_ms`` (sooner when a batch is
full or a summary arrives), and each write is **one transaction** that both updates the session's
local record (``local_sessions``) and appends the outbox rows: the local record says exactly what
went to the outbox (and what was refused), and nothing is synced that it does not record.
:meth:`Outbox.record_event` takes one event as a session sends it and never raises.

Only ``note`` and ``score`` events are synced, in compact batches of at most ``batch_max_results``
per row, plus one row per summary. Row ids come from ``AUTOINCREMENT`` (never reused after a delete)
and are qualified with the edge id and a random epoch chosen when the file was created, so a
message id (:meth:`OutboxRow.msg_id`) is unique across edges and across a re-created outbox file.

The outbox is bounded (``outbox_max_rows``). When full it refuses new note/score batches - counted
in ``seminote_outbox_dropped_results_total`` and in the session's ``results_dropped`` - but still
admits summaries into ``outbox_summary_reserve_rows`` extra rows; refusing new data keeps what is
already queued intact and in order. ``seminote_outbox_fill_ratio`` and a warning log at
``outbox_warn_fill_ratio`` give operators the alert before that happens.

The relay runs in its own process (:mod:`edge_node.relay_process`) and reaches the same file through
:class:`OutboxReader`, its own connection: WAL lets it read while the edge writes, and SQLite's write
lock serializes its deletes with the edge's inserts. The row count both sides need (the bound, the
gauges, the control plane's outbox depth) is kept by triggers in ``outbox_count``, in the same
transactions that insert and delete rows, so either process reads it exactly in O(1).

All SQLite work runs on one worker thread per connection (SQLite connections are not shared between
threads here), in WAL mode with ``synchronous=NORMAL``: a committed row survives the process being
killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sqlite3
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import sqlite_utils
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from .errors import OutboxError
from .events import Event
from .settings import SyncSettings

__all__ = ["SYNCED_EVENT_TYPES", "Outbox", "OutboxReader", "OutboxRow", "SessionRecord", "SyncMetrics"]

log = structlog.get_logger(__name__)

SYNCED_EVENT_TYPES: frozenset[str] = frozenset({"note", "score"})
"""Event types that are results worth keeping in the cloud (besides the summary)."""

MESSAGE_VERSION = 1
PENDING_MAX_RESULTS = 100_000
"""Results held in memory between flushes, at most (reached only while writes to disk fail)."""
FLUSH_EARLY_RESULTS = 8_192
"""Results held in memory (all sessions) that trigger a write before the flush interval."""
RowKind = Literal["events", "summary"]

class SyncMetrics:
    """Prometheus metrics of the outbox and the relay, in the edge's registry (one per edge process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.outbox_rows = Gauge("seminote_outbox_rows", "Rows (result batches) waiting in the outbox", registry=r)
        self.outbox_fill_ratio = Gauge(
            "seminote_outbox_fill_ratio", "Outbox rows / outbox_max_rows (alert at outbox_warn_fill_ratio)",
            registry=r)
        self.outbox_full = Gauge("seminote_outbox_full", "1 while the outbox refuses new result batches",
                                 registry=r)
        self.recorded_results = Counter(
            "seminote_outbox_recorded_results", "note/score results written to the outbox", registry=r)
        self.dropped_results = Counter(
            "seminote_outbox_dropped_results", "note/score results refused because the outbox was full",
            registry=r)
        self.published_rows = Counter("seminote_relay_published_rows", "Outbox rows acked by JetStream",
                                      registry=r)
        self.published_results = Counter(
            "seminote_relay_published_results", "note/score results acked by JetStream", registry=r)
        self.duplicate_acks = Counter(
            "seminote_relay_duplicate_acks", "Publishes JetStream acked as duplicates (already stored)",
            registry=r)
        self.publish_failures = Counter("seminote_relay_publish_failures", "Relay rounds that got no ack",
                                        registry=r)
        self.nats_connected = Gauge("seminote_relay_nats_connected", "1 while the relay has a NATS connection",
                                    registry=r)
        self.relay_running = Gauge("seminote_relay_running", "1 while the relay process is up", registry=r)
        self.relay_restarts = Counter("seminote_relay_restarts", "Relay processes restarted after they died",
                                      registry=r)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One queued message: a batch of one session's results, or its summary."""

    id: int
    session_id: str
    kind: RowKind
    results: int
    payload: bytes

    def msg_id(self, edge_id: str, epoch: str) -> str:
        """The JetStream ``Nats-Msg-Id``: unique across edges and re-created outbox files."""
        return f"{edge_id}.{epoch}.{self.id}"


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """The edge's local record of one session's synced results."""

    session_id: str
    user_id: str
    started_at: float
    results_recorded: int
    results_dropped: int
    last_seq: int
    has_summary: bool


@dataclass(slots=True)
class _PendingSession:
    user_id: str
    events: list[Event]
    summary: Event | None = None


class Outbox:
    """Bounded, durable queue of session results (see module docstring)."""

    def __init__(self, settings: SyncSettings, edge_id: str, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.edge_id = edge_id
        self.metrics = SyncMetrics(registry)
        self.epoch = ""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-sqlite")
        self._db: sqlite_utils.Database | None = None
        self._pending: dict[str, _PendingSession] = {}
        self._pending_results = 0
        self._rows = 0
        self._warned = False
        self._wake_flusher = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None
        self._state: Literal["new", "open", "closed"] = "new"
        self.dropped_results = 0

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open (or create) the SQLite file and start the flusher task."""
        if self._state == "closed":
            raise OutboxError("outbox was closed; create a new one")
        if self._state == "open":
            return
        await self._run(self._open)
        self._state = "open"
        self._flusher = asyncio.create_task(self._flush_loop(), name="outbox-flusher")

    async def aclose(self) -> None:
        """Write what is still in memory, then close the file. Safe to call twice."""
        if self._state != "open":
            self._state = "closed"
            return
        self._state = "closed"
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        try:
            await self._write_pending()
        finally:
            await self._run(self._close_db)
            self._executor.shutdown(wait=True)

    async def __aenter__(self) -> Outbox:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- the session's side (called from the audio path: memory only) -------------------------------

    def record_events(self, session_id: str, user_id: str, events: Iterable[Event]) -> int:
        """Queue this session's ``note``/``score`` events for the outbox; returns how many were kept.

        Never touches disk: the flusher writes them within ``flush_interval_ms``.
        """
        if self._state != "open":
            raise OutboxError(f"record_events on a {self._state} outbox")
        kept = [e for e in events if e.get("type") in SYNCED_EVENT_TYPES]
        if not kept:
            return 0
        if self._pending_results + len(kept) > PENDING_MAX_RESULTS:
            # The flusher cannot keep up (disk failing): memory stays bounded; the loss is counted.
            self.dropped_results += len(kept)
            self.metrics.dropped_results.inc(len(kept))
            return 0
        pending = self._pending.get(session_id)
        if pending is None:
            pending = self._pending[session_id] = _PendingSession(user_id, [])
        pending.events.extend(kept)
        self._pending_results += len(kept)
        # Write early when a session has a full row, or much is held; otherwise every flush interval,
        # so rows stay compact (many results each) instead of one row per result.
        if len(pending.events) >= self.settings.batch_max_results or self._pending_results >= FLUSH_EARLY_RESULTS:
            self._wake_flusher.set()
        return len(kept)

    def record_event(self, session_id: str, user_id: str, event: Event) -> None:
        """One event as the session sends it: summaries and note/score results are kept, the rest
        ignored. Never raises into the audio path: after close, the result is counted as dropped."""
        kind = event.get("type")
        if self._state != "open":
            if kind in SYNCED_EVENT_TYPES:
                self.dropped_results += 1
                self.metrics.dropped_results.inc()
            return
        if kind == "summary":
            self.record_summary(session_id, user_id, event)
        elif kind in SYNCED_EVENT_TYPES:
            self.record_events(session_id, user_id, (event,))

    def record_summary(self, session_id: str, user_id: str, summary: Event) -> None:
        """Queue the session's ``summary`` event; it is written on the next flush, promptly."""
        if self._state != "open":
            raise OutboxError(f"record_summary on a {self._state} outbox")
        if summary.get("type") != "summary":
            raise OutboxError(f"record_summary got a {summary.get('type')!r} event")
        pending = self._pending.get(session_id)
        if pending is None:
            pending = self._pending[session_id] = _PendingSession(user_id, [])
        pending.summary = summary
        self._wake_flusher.set()

    async def flush(self) -> None:
        """Write everything recorded so far (tests, shutdown, end of a session)."""
        await self._write_pending()
        await self.refresh_rows()

    # -- what the relay needs from the edge's side --------------------------------------------------

    @property
    def rows(self) -> int:
        """Rows in the outbox: exact after this process's writes, and re-read from the file every flush
        interval, so the relay process's deletes show within ``flush_interval_ms``."""
        return self._rows

    async def refresh_rows(self) -> int:
        """Read the row count from the file now (the relay process deletes rows behind our back)."""
        if self._state != "open":
            return self._rows
        await self._run(self._refresh_rows)
        return self._rows

    async def session(self, session_id: str) -> SessionRecord | None:
        """The local record of a session (what was written for it), or ``None``."""
        return await self._run(self._session, session_id)

    # -- internals (worker thread) ------------------------------------------------------------------

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _open(self) -> None:
        self._db, self.epoch = open_outbox_db(self.settings.outbox_path)
        self._refresh_rows()

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.conn.close()
            self._db = None

    def _refresh_rows(self) -> None:
        assert self._db is not None
        self._rows = _count_rows(self._db.conn)
        self._update_gauges()

    def _session(self, session_id: str) -> SessionRecord | None:
        assert self._db is not None
        row = self._db.execute(
            "SELECT session_id, user_id, started_at, results_recorded, results_dropped, last_seq,"
            " summary IS NOT NULL FROM local_sessions WHERE session_id = ?",
            [session_id],
        ).fetchone()
        if row is None:
            return None
        return SessionRecord(str(row[0]), str(row[1]), float(row[2]), int(row[3]), int(row[4]),
                             int(row[5]), bool(row[6]))

    def _update_gauges(self) -> None:
        max_rows = self.settings.outbox_max_rows
        ratio = self._rows / max_rows
        self.metrics.outbox_rows.set(self._rows)
        self.metrics.outbox_fill_ratio.set(ratio)
        self.metrics.outbox_full.set(1 if self._rows >= max_rows else 0)
        if ratio >= self.settings.outbox_warn_fill_ratio and not self._warned:
            self._warned = True
            log.warning("outbox nearly full", rows=self._rows, max_rows=max_rows, fill_ratio=round(ratio, 3))
        elif ratio < self.settings.outbox_warn_fill_ratio * 0.9:
            self._warned = False

    # -- flushing -----------------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        interval_s = self.settings.flush_interval_ms / 1000.0
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s):
                    await self._wake_flusher.wait()
            self._wake_flusher.clear()
            try:
                if not await self._write_pending():
                    await self._run(self._refresh_rows)  # the relay process's deletes
            except asyncio.CancelledError:
                raise
            except Exception:
                # A disk error must not kill the flusher; the results stay in memory for the next try.
                log.exception("outbox flush failed; will retry")

    async def _write_pending(self) -> bool:
        """Write what is in memory; ``True`` if anything was. One write at a time (the flusher and
        :meth:`flush` may race); a cancel while the worker thread writes waits for that write, so
        nothing is written twice."""
        async with self._write_lock:
            if not self._pending or self._db is None:
                return False
            batch, self._pending = self._pending, {}
            results = self._pending_results
            self._pending_results = 0
            write = asyncio.get_running_loop().run_in_executor(self._executor, self._write, batch, time.time())
            try:
                await asyncio.shield(write)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await write  # the thread finishes regardless: let it, then keep cancelling
                if write.exception() is not None:
                    self._requeue(batch, results)
                raise
            except Exception:
                self._requeue(batch, results)
                raise
            return True

    def _requeue(self, batch: dict[str, _PendingSession], results: int) -> None:
        """Put a batch that failed to write back in front of anything recorded meanwhile."""
        for sid, p in self._pending.items():
            if sid in batch:
                batch[sid].events.extend(p.events)
                batch[sid].summary = p.summary or batch[sid].summary
            else:
                batch[sid] = p
        self._pending = batch
        self._pending_results += results

    def _write(self, batch: dict[str, _PendingSession], now: float) -> int:
        """One transaction: the sessions' local records and their outbox rows. Returns rows written."""
        assert self._db is not None
        conn = self._db.conn
        size = self.settings.batch_max_results
        max_rows = self.settings.outbox_max_rows
        written = 0
        recorded = 0
        dropped = 0
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            rows = _count_rows(conn)  # exact: the relay process cannot delete while we hold the lock
            for session_id, pending in batch.items():
                local = conn.execute(
                    "SELECT started_at FROM local_sessions WHERE session_id = ?", [session_id]
                ).fetchone()
                started_at = float(local[0]) if local else now
                if local is None:
                    conn.execute(
                        "INSERT INTO local_sessions (session_id, user_id, started_at, updated_at)"
                        " VALUES (?, ?, ?, ?)",
                        [session_id, pending.user_id, started_at, now],
                    )
                header = {
                    "v": MESSAGE_VERSION, "edge_id": self.edge_id, "session_id": session_id,
                    "user_id": pending.user_id, "started_at": started_at,
                }
                kept = 0
                lost = 0
                last_seq = -1
                events = pending.events
                for start in range(0, len(events), size):
                    chunk = events[start:start + size]
                    if rows + written >= max_rows:
                        lost += len(chunk)
                        continue
                    payload = _encode({**header, "kind": "events", "events": chunk})
                    conn.execute(
                        "INSERT INTO outbox (session_id, kind, results, payload, created_at)"
                        " VALUES (?, 'events', ?, ?, ?)",
                        [session_id, len(chunk), payload, now],
                    )
                    written += 1
                    kept += len(chunk)
                    last_seq = int(chunk[-1].get("seq", -1))
                summary_json: str | None = None
                if pending.summary is not None:
                    if rows + written >= max_rows + self.settings.outbox_summary_reserve_rows:
                        log.error("outbox full: summary refused", session_id=session_id)
                    else:
                        payload = _encode({**header, "kind": "summary", "summary": pending.summary})
                        conn.execute(
                            "INSERT INTO outbox (session_id, kind, results, payload, created_at)"
                            " VALUES (?, 'summary', 0, ?, ?)",
                            [session_id, payload, now],
                        )
                        written += 1
                        summary_json = json.dumps(pending.summary, separators=(",", ":"))
                conn.execute(
                    "UPDATE local_sessions SET updated_at = ?, results_recorded = results_recorded + ?,"
                    " results_dropped = results_dropped + ?,"
                    " last_seq = CASE WHEN ? > last_seq THEN ? ELSE last_seq END,"
                    " summary = COALESCE(?, summary) WHERE session_id = ?",
                    [now, kept, lost, last_seq, last_seq, summary_json, session_id],
                )
                recorded += kept
                dropped += lost
        self._rows = rows + written
        self.metrics.recorded_results.inc(recorded)
        if dropped:
            self.dropped_results += dropped
            self.metrics.dropped_results.inc(dropped)
            log.error("outbox full: results refused", results=dropped, rows=self._rows)
        self._update_gauges()
        return written


class OutboxReader:
    """The relay's side of the outbox file: the oldest rows, and deleting those JetStream acked.

    Its own SQLite connection on its own worker thread, so it can live in another process than the
    :class:`Outbox` that writes the file (see module docstring).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.epoch = ""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-reader")
        self._db: sqlite_utils.Database | None = None
        self._state: Literal["new", "open", "closed"] = "new"
        self._data_version = -1

    async def start(self) -> None:
        if self._state == "closed":
            raise OutboxError("outbox reader was closed; create a new one")
        if self._state == "open":
            return
        self._db, self.epoch = await self._run(open_outbox_db, self.path)
        self._state = "open"

    async def aclose(self) -> None:
        """Close the file. Safe to call twice."""
        if self._state != "open":
            self._state = "closed"
            return
        self._state = "closed"
        await self._run(self._close_db)
        self._executor.shutdown(wait=True)

    async def __aenter__(self) -> OutboxReader:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def fetch(self, limit: int) -> list[OutboxRow]:
        """The oldest ``limit`` rows, in id order."""
        return await self._run_open(self._fetch, limit)  # type: ignore[no-any-return]

    async def delete(self, ids: Sequence[int]) -> None:
        """Remove rows whose publish was acknowledged."""
        if ids:
            await self._run_open(self._delete, list(ids))

    async def count(self) -> int:
        """Rows in the outbox now."""
        return await self._run_open(self._count)  # type: ignore[no-any-return]

    async def changed(self) -> bool:
        """Whether any other connection (the edge, its workers) committed to the file since the last
        call: a cheap look (``PRAGMA data_version``) that needs no signal from the writers."""
        return await self._run_open(self._changed)  # type: ignore[no-any-return]

    async def _run_open(self, fn: Any, *args: Any) -> Any:
        if self._state != "open":
            raise OutboxError(f"outbox reader is {self._state}")
        return await self._run(fn, *args)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.conn.close()
            self._db = None

    def _fetch(self, limit: int) -> list[OutboxRow]:
        assert self._db is not None
        cur = self._db.execute(
            "SELECT id, session_id, kind, results, payload FROM outbox ORDER BY id LIMIT ?", [limit]
        )
        return [OutboxRow(int(i), str(s), k, int(n), bytes(p)) for i, s, k, n, p in cur.fetchall()]

    def _delete(self, ids: list[int]) -> None:
        assert self._db is not None
        with self._db.conn:
            self._db.conn.execute("BEGIN IMMEDIATE")
            self._db.conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    def _count(self) -> int:
        assert self._db is not None
        return _count_rows(self._db.conn)

    def _changed(self) -> bool:
        assert self._db is not None
        version = int(self._db.conn.execute("PRAGMA data_version").fetchone()[0])
        changed, self._data_version = version != self._data_version, version
        return changed


def open_outbox_db(path: Path) -> tuple[sqlite_utils.Database, str]:
    """Open (or create) the outbox file: WAL, the tables, the row-count triggers, the epoch.

    Idempotent and safe when the edge and its relay process open the file at the same time (the
    schema is made in one ``BEGIN IMMEDIATE`` transaction). Returns the database and its epoch.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None)
    db = sqlite_utils.Database(conn)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=5000")
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE IF NOT EXISTS outbox_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS outbox ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL, kind TEXT NOT NULL,"
            " results INTEGER NOT NULL, payload BLOB NOT NULL, created_at REAL NOT NULL)"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS local_sessions ("
            " session_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, started_at REAL NOT NULL,"
            " updated_at REAL NOT NULL, results_recorded INTEGER NOT NULL DEFAULT 0,"
            " results_dropped INTEGER NOT NULL DEFAULT 0, last_seq INTEGER NOT NULL DEFAULT -1,"
            " summary TEXT)"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS outbox_count (id INTEGER PRIMARY KEY CHECK (id = 0), rows INTEGER NOT NULL)"
        )
        # A file made before the count existed is counted once, here, in the same transaction.
        conn.execute("INSERT OR IGNORE INTO outbox_count (id, rows) SELECT 0, COUNT(*) FROM outbox")
        conn.execute(
            "CREATE TRIGGER IF NOT EXISTS outbox_count_insert AFTER INSERT ON outbox"
            " BEGIN UPDATE outbox_count SET rows = rows + 1 WHERE id = 0; END"
        )
        conn.execute(
            "CREATE TRIGGER IF NOT EXISTS outbox_count_delete AFTER DELETE ON outbox"
            " BEGIN UPDATE outbox_count SET rows = rows - 1 WHERE id = 0; END"
        )
        conn.execute("INSERT OR IGNORE INTO outbox_meta (key, value) VALUES ('epoch', ?)", [secrets.token_hex(4)])
        epoch = str(conn.execute("SELECT value FROM outbox_meta WHERE key = 'epoch'").fetchone()[0])
    return db, epoch


def _count_rows(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT rows FROM outbox_count WHERE id = 0").fetchone()[0])


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
