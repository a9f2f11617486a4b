"""Durable control-plane state in SQLite (sqlite-utils): edges, sessions and routing decisions.

The registry keeps live state in memory (routing must not wait on disk); the store keeps what must
survive a restart (which edges exist, operator cordon/drain, sessions, an audit trail of routing
decisions). All SQLite work runs on one dedicated thread, so the event loop never blocks on disk.
Route-time writes are buffered and flushed in one transaction every ``flush_interval_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils
import structlog

log = structlog.get_logger(__name__)
T = TypeVar("T")

FLUSH_INTERVAL_S = 0.5
SESSION_STATES = ("routed", "active", "ended", "expired")
LIST_LIMIT_DEFAULT = 1000
ROUTE_COLUMNS = ("at", "user", "session_id", "edge_id", "mode", "tempo_bpm", "rtt_ms", "reason", "alternates")


@dataclass(frozen=True, slots=True)
class StoredEdge:
    """What the store remembers of an edge between restarts."""

    edge_id: str
    region: str
    lat: float
    lon: float
    whip_url: str
    capacity: int
    cordoned: bool
    drain_deadline: float  # Unix seconds, 0 when not draining
    last_seen_at: float


class Store:
    """SQLite state behind an async API. ``async with Store(path) as store: ...``"""

    def __init__(self, path: Path | str, flush_interval_s: float = FLUSH_INTERVAL_S) -> None:
        self.path = Path(path)
        self.flush_interval_s = flush_interval_s
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite_utils.Database | None = None
        self._pending_sessions: dict[str, dict[str, Any]] = {}
        self._pending_routes: list[dict[str, Any]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False

    async def __aenter__(self) -> Store:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        if self._closed:
            raise RuntimeError("Store is closed; make a new one")
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="control-store")
        await self._run(self._open)
        self._flusher = asyncio.create_task(self._flush_loop(), name="store-flush")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        if self._executor is not None:
            try:
                await self.flush()
            finally:
                await self._run(self._close_db)
                self._executor.shutdown(wait=True)
                self._executor = None

    # ------------------------------------------------------------------ thread side

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), check_same_thread=False)
        db = sqlite_utils.Database(conn)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.table("edges").create(
            {"edge_id": str, "region": str, "lat": float, "lon": float, "whip_url": str, "capacity": int,
             "capabilities": str, "cordoned": int, "drain_deadline": float, "registered_at": float,
             "last_seen_at": float, "version": str},
            pk="edge_id", if_not_exists=True,
        )
        db.table("sessions").create(
            {"session_id": str, "user": str, "edge_id": str, "mode": str, "piece": str, "state": str,
             "routed_at": float, "updated_at": float},
            pk="session_id", if_not_exists=True,
        )
        db.table("sessions").create_index(["edge_id", "state"], if_not_exists=True)
        db.table("sessions").create_index(["state"], if_not_exists=True)
        db.table("routes").create(
            {"id": int, "at": float, "user": str, "session_id": str, "edge_id": str, "mode": str,
             "tempo_bpm": float, "rtt_ms": float, "reason": str, "alternates": str},
            pk="id", if_not_exists=True,
        )
        self._db = db

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.conn.close()
            self._db = None

    def _require_db(self) -> sqlite_utils.Database:
        if self._db is None:
            raise RuntimeError("Store is not open")
        return self._db

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise RuntimeError("Store is not started")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # ------------------------------------------------------------------ edges

    async def upsert_edge(self, row: dict[str, Any]) -> None:
        """Insert or update an edge's registration (operator fields are left as they are)."""
        await self._run(self._upsert_edge, row)

    def _upsert_edge(self, row: dict[str, Any]) -> None:
        db = self._require_db()
        row = dict(row)
        row["capabilities"] = json.dumps(row.get("capabilities", {}))
        with db.conn:
            db["edges"].upsert(row, pk="edge_id")  # type: ignore[union-attr]

    async def set_edge_admin(self, edge_id: str, cordoned: bool, drain_deadline: float) -> None:
        await self._run(self._set_edge_admin, edge_id, cordoned, drain_deadline)

    def _set_edge_admin(self, edge_id: str, cordoned: bool, drain_deadline: float) -> None:
        db = self._require_db()
        with db.conn:
            db.execute("UPDATE edges SET cordoned = ?, drain_deadline = ? WHERE edge_id = ?",
                       [int(cordoned), drain_deadline, edge_id])

    async def touch_edges(self, seen: dict[str, float]) -> None:
        """Record when edges were last heard from (batched by the registry sweeper)."""
        if seen:
            await self._run(self._touch_edges, seen)

    def _touch_edges(self, seen: dict[str, float]) -> None:
        db = self._require_db()
        with db.conn:
            db.conn.executemany("UPDATE edges SET last_seen_at = ? WHERE edge_id = ?",
                                [(at, edge_id) for edge_id, at in seen.items()])

    async def delete_edge(self, edge_id: str) -> None:
        await self._run(self._delete_edge, edge_id)

    def _delete_edge(self, edge_id: str) -> None:
        db = self._require_db()
        with db.conn:
            db.execute("DELETE FROM edges WHERE edge_id = ?", [edge_id])

    async def load_edges(self) -> list[StoredEdge]:
        return await self._run(self._load_edges)

    def _load_edges(self) -> list[StoredEdge]:
        db = self._require_db()
        return [
            StoredEdge(r["edge_id"], r["region"], r["lat"], r["lon"], r["whip_url"], r["capacity"],
                       bool(r["cordoned"]), r["drain_deadline"] or 0.0, r["last_seen_at"] or 0.0)
            for r in db["edges"].rows
        ]

    # ------------------------------------------------------------------ sessions and routes

    def session_changed(self, session_id: str, **fields: Any) -> None:
        """Buffer a session insert/update (merged per session until the next flush)."""
        fields.setdefault("updated_at", time.time())
        row = self._pending_sessions.setdefault(session_id, {"session_id": session_id})
        row.update(fields)

    def route_recorded(self, row: dict[str, Any]) -> None:
        """Buffer one routing decision for the audit trail."""
        self._pending_routes.append(row)

    async def flush(self) -> None:
        if not self._pending_sessions and not self._pending_routes:
            return
        sessions, self._pending_sessions = self._pending_sessions, {}
        routes, self._pending_routes = self._pending_routes, []
        await self._run(self._flush, list(sessions.values()), routes)

    def _flush(self, sessions: list[dict[str, Any]], routes: list[dict[str, Any]]) -> None:
        db = self._require_db()
        groups: dict[tuple[str, ...], list[list[Any]]] = {}
        for row in sessions:
            cols = tuple(c for c in row if c != "session_id")
            groups.setdefault(cols, []).append([row["session_id"], *(row[c] for c in cols)])
        with db.conn:
            for cols, rows in groups.items():
                # Upsert that keeps the columns this change does not mention; one statement per shape.
                db.conn.executemany(
                    f"INSERT INTO sessions (session_id, {', '.join(cols)}) VALUES (?{', ?' * len(cols)}) "
                    f"ON CONFLICT(session_id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in cols)}",
                    rows,
                )
            if routes:
                db.conn.executemany(
                    f"INSERT INTO routes ({', '.join(ROUTE_COLUMNS)}) VALUES ({', '.join('?' * len(ROUTE_COLUMNS))})",
                    [[r.get(c) for c in ROUTE_COLUMNS] for r in routes],
                )

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            try:
                await self.flush()
            except (sqlite3.Error, RuntimeError) as exc:
                log.error("store flush failed", error=str(exc))

    async def list_sessions(self, edge_id: str = "", states: tuple[str, ...] = ("routed", "active"),
                            limit: int = LIST_LIMIT_DEFAULT) -> list[dict[str, Any]]:
        await self.flush()
        return await self._run(self._list_sessions, edge_id, states, limit)

    def _list_sessions(self, edge_id: str, states: tuple[str, ...], limit: int) -> list[dict[str, Any]]:
        db = self._require_db()
        where = [f"state IN ({', '.join('?' * len(states))})"]
        args: list[Any] = list(states)
        if edge_id:
            where.append("edge_id = ?")
            args.append(edge_id)
        args.append(limit)
        sql = f"SELECT * FROM sessions WHERE {' AND '.join(where)} ORDER BY routed_at DESC LIMIT ?"
        return [dict(r) for r in db.query(sql, args)]

    async def count_routes(self) -> int:
        await self.flush()
        return await self._run(lambda: self._require_db()["routes"].count)
