"""The progress store: every synced practice result, in SQLite (sqlite-utils), and the queries on it.

Tables (one file, WAL):

- ``users``: one row per student seen in any result.
- ``practice_sessions``: one row per session: who, which edge, when it started, results so far, and
  a copy of its summary's scores (so the progress queries are one covering-index range scan).
- ``performances``: what was played in a session: each synced ``note`` and ``score`` event, keyed by
  ``(session_id, seq)``, with the fields queries need pulled out of the event JSON.
- ``analysis_results``: the session's ``summary`` (pitch/rhythm accuracy, dynamics range, overall
  score) with the whole summary kept as feedback JSON.
- ``ingested_messages``: the message id of every applied JetStream message.

Writes are idempotent twice over: a message whose id is already in ``ingested_messages`` is skipped
whole (so a redelivery long after JetStream's duplicate window still changes nothing), and a result
whose ``(session_id, seq)`` exists is not inserted again. Queries read through their own connection
so a long ingest transaction never blocks them beyond WAL's snapshot rules.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

import sqlite_utils

__all__ = [
    "ApplyStats",
    "ProgressStore",
    "ResultMessage",
    "SessionDetail",
    "SessionScore",
    "WeekTrend",
]

T = TypeVar("T")

SECONDS_PER_DAY = 86400.0
SESSIONS_LIMIT_DEFAULT = 1000
SESSIONS_LIMIT_MAX = 10_000
VERDICTS = ("correct", "wrong_pitch", "missed", "extra")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS users ("
    " user_id TEXT PRIMARY KEY, first_seen_at REAL NOT NULL, last_session_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS practice_sessions ("
    " session_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, edge_id TEXT NOT NULL,"
    " started_at REAL NOT NULL, last_result_at REAL NOT NULL, results_count INTEGER NOT NULL DEFAULT 0,"
    " pitch_accuracy REAL, rhythm_accuracy REAL, dynamics_range REAL, overall_score REAL, duration_s REAL)",
    # Covering index of the progress queries: a user's sessions in time order with their scores are one
    # range scan, no table lookups (the scores are copied here from analysis_results by the ingest).
    "CREATE INDEX IF NOT EXISTS practice_sessions_user_started ON practice_sessions (user_id, started_at,"
    " session_id, edge_id, results_count, pitch_accuracy, rhythm_accuracy, dynamics_range, overall_score,"
    " duration_s)",
    "CREATE TABLE IF NOT EXISTS performances ("
    " session_id TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL, t REAL NOT NULL,"
    " note_id INTEGER, pitch INTEGER, velocity INTEGER, end_t REAL, verdict TEXT, timing_ms REAL,"
    " event TEXT NOT NULL, msg_id TEXT NOT NULL, PRIMARY KEY (session_id, seq)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS analysis_results ("
    " session_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, completed_at REAL NOT NULL,"
    " pitch_accuracy REAL, rhythm_accuracy REAL, dynamics_range REAL, overall_score REAL,"
    " notes_played INTEGER, duration_s REAL, feedback TEXT NOT NULL, msg_id TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS ingested_messages ("
    " msg_id TEXT PRIMARY KEY, subject TEXT NOT NULL, session_id TEXT NOT NULL, results INTEGER NOT NULL,"
    " ingest_order INTEGER NOT NULL, ingested_at REAL NOT NULL)",
)


@dataclass(frozen=True, slots=True)
class ResultMessage:
    """One validated message from the results stream (see ``control_plane.ingest``)."""

    msg_id: str
    subject: str
    edge_id: str
    session_id: str
    user_id: str
    started_at: float
    kind: Literal["events", "summary"]
    events: tuple[dict[str, Any], ...] = ()
    summary: dict[str, Any] | None = None

    @property
    def results(self) -> int:
        return len(self.events)


@dataclass(slots=True)
class ApplyStats:
    """What one :meth:`ProgressStore.apply` did."""

    messages: int = 0
    duplicate_messages: int = 0
    results_inserted: int = 0
    duplicate_results: int = 0
    summaries: int = 0


@dataclass(frozen=True, slots=True)
class SessionScore:
    """A session in a user's history, with its scores (``None`` until its summary arrives)."""

    session_id: str
    edge_id: str
    started_at: float
    results_count: int
    pitch_accuracy: float | None
    rhythm_accuracy: float | None
    dynamics_range: float | None
    overall_score: float | None
    duration_s: float | None


@dataclass(frozen=True, slots=True)
class WeekTrend:
    """Averages over the sessions that started in one week (weeks start on Monday, UTC)."""

    week_start: str  # ISO date of the Monday
    sessions: int
    avg_pitch_accuracy: float | None
    avg_rhythm_accuracy: float | None
    avg_dynamics_range: float | None
    avg_overall_score: float | None
    practice_s: float


@dataclass(frozen=True, slots=True)
class SessionDetail:
    """One session: its record, summary and what its performance contained."""

    session_id: str
    user_id: str
    edge_id: str
    started_at: float
    last_result_at: float
    results_count: int
    notes: int
    verdicts: dict[str, int]
    mean_abs_timing_ms: float | None
    summary: dict[str, Any] | None
    completed_at: float | None
    scores: SessionScore
    recent_events: list[dict[str, Any]] = field(default_factory=list)


class ProgressStore:
    """SQLite progress store behind an async API; ``async with ProgressStore(path) as store``.

    All writes go through one worker thread; reads through another with their own connection.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._write_pool: ThreadPoolExecutor | None = None
        self._read_pool: ThreadPoolExecutor | None = None
        self._wdb: sqlite_utils.Database | None = None
        self._rdb: sqlite_utils.Database | None = None
        self._closed = False
        self._ingest_order = 0

    async def __aenter__(self) -> ProgressStore:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        if self._closed:
            raise RuntimeError("ProgressStore is closed; make a new one")
        if self._write_pool is not None:
            return
        self._write_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="progress-write")
        self._read_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="progress-read")
        await self._write(self._open_writer)
        await self._read(self._open_reader)

    async def aclose(self) -> None:
        """Close both connections. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._write_pool is not None and self._read_pool is not None:
            await self._write(self._close_writer)
            await self._read(self._close_reader)
            self._write_pool.shutdown(wait=True)
            self._read_pool.shutdown(wait=True)

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        if self._write_pool is None:
            raise RuntimeError("ProgressStore is not started")
        return await asyncio.get_running_loop().run_in_executor(self._write_pool, fn, *args)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        if self._read_pool is None:
            raise RuntimeError("ProgressStore is not started")
        return await asyncio.get_running_loop().run_in_executor(self._read_pool, fn, *args)

    # -- connections --------------------------------------------------------------------------------

    def _connect(self) -> sqlite_utils.Database:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), isolation_level=None)
        db = sqlite_utils.Database(conn)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=10000")
        return db

    def _open_writer(self) -> None:
        db = self._connect()
        for statement in _SCHEMA:
            db.execute(statement)
        self._ingest_order = int(
            db.execute("SELECT COALESCE(MAX(ingest_order), 0) FROM ingested_messages").fetchone()[0]
        )
        self._wdb = db

    def _open_reader(self) -> None:
        self._rdb = self._connect()

    def _close_writer(self) -> None:
        if self._wdb is not None:
            self._wdb.conn.close()
            self._wdb = None

    def _close_reader(self) -> None:
        if self._rdb is not None:
            self._rdb.conn.close()
            self._rdb = None

    # -- writes -------------------------------------------------------------------------------------

    async def apply(self, messages: Sequence[ResultMessage]) -> ApplyStats:
        """Apply messages in order, in one transaction; duplicates (by message id) change nothing."""
        return await self._write(self._apply, list(messages), time.time())

    def _apply(self, messages: list[ResultMessage], now: float) -> ApplyStats:
        assert self._wdb is not None
        conn = self._wdb.conn
        stats = ApplyStats()
        order = self._ingest_order
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            for m in messages:
                order += 1
                cur = conn.execute(
                    "INSERT OR IGNORE INTO ingested_messages"
                    " (msg_id, subject, session_id, results, ingest_order, ingested_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [m.msg_id, m.subject, m.session_id, m.results, order, now],
                )
                if cur.rowcount == 0:
                    stats.duplicate_messages += 1
                    continue
                stats.messages += 1
                conn.execute(
                    "INSERT INTO users (user_id, first_seen_at, last_session_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (user_id) DO UPDATE SET"
                    " last_session_at = MAX(last_session_at, excluded.last_session_at)",
                    [m.user_id, now, m.started_at],
                )
                inserted = 0
                if m.events:
                    before = conn.total_changes
                    conn.executemany(
                        "INSERT OR IGNORE INTO performances (session_id, seq, type, t, note_id, pitch,"
                        " velocity, end_t, verdict, timing_ms, event, msg_id)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [_performance_row(m.session_id, e, m.msg_id) for e in m.events],
                    )
                    inserted = conn.total_changes - before
                    stats.results_inserted += inserted
                    stats.duplicate_results += len(m.events) - inserted
                conn.execute(
                    "INSERT INTO practice_sessions"
                    " (session_id, user_id, edge_id, started_at, last_result_at, results_count)"
                    " VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (session_id) DO UPDATE SET last_result_at = excluded.last_result_at,"
                    " results_count = results_count + excluded.results_count",
                    [m.session_id, m.user_id, m.edge_id, m.started_at, now, inserted],
                )
                if m.summary is not None:
                    s = m.summary
                    stats.summaries += 1
                    conn.execute(
                        "UPDATE practice_sessions SET pitch_accuracy = ?, rhythm_accuracy = ?,"
                        " dynamics_range = ?, overall_score = ?, duration_s = ? WHERE session_id = ?",
                        [_num(s.get("pitch_accuracy")), _num(s.get("rhythm_accuracy")),
                         _num(s.get("dynamics_range")), _num(s.get("overall_score")),
                         _num(s.get("duration_s")), m.session_id],
                    )
                    conn.execute(
                        "INSERT INTO analysis_results (session_id, user_id, completed_at, pitch_accuracy,"
                        " rhythm_accuracy, dynamics_range, overall_score, notes_played, duration_s,"
                        " feedback, msg_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                        " ON CONFLICT (session_id) DO UPDATE SET completed_at = excluded.completed_at,"
                        " pitch_accuracy = excluded.pitch_accuracy, rhythm_accuracy = excluded.rhythm_accuracy,"
                        " dynamics_range = excluded.dynamics_range, overall_score = excluded.overall_score,"
                        " notes_played = excluded.notes_played, duration_s = excluded.duration_s,"
                        " feedback = excluded.feedback, msg_id = excluded.msg_id",
                        [m.session_id, m.user_id, now, _num(s.get("pitch_accuracy")),
                         _num(s.get("rhythm_accuracy")), _num(s.get("dynamics_range")),
                         _num(s.get("overall_score")), _int(s.get("notes_played")),
                         _num(s.get("duration_s")), json.dumps(s, separators=(",", ":")), m.msg_id],
                    )
        self._ingest_order = order
        return stats

    # -- queries ------------------------------------------------------------------------------------

    async def sessions(
        self, user_id: str, since: float | None = None, until: float | None = None,
        limit: int = SESSIONS_LIMIT_DEFAULT,
    ) -> list[SessionScore]:
        """A user's sessions, oldest first, started in ``[since, until)`` (Unix seconds)."""
        limit = max(1, min(limit, SESSIONS_LIMIT_MAX))
        return await self._read(self._sessions, user_id, since, until, limit)

    def _sessions(self, user_id: str, since: float | None, until: float | None, limit: int) -> list[SessionScore]:
        assert self._rdb is not None
        rows = self._rdb.execute(
            "SELECT session_id, edge_id, started_at, results_count, pitch_accuracy, rhythm_accuracy,"
            " dynamics_range, overall_score, duration_s FROM practice_sessions"
            " WHERE user_id = ? AND started_at >= ? AND started_at < ?"
            " ORDER BY started_at, session_id LIMIT ?",
            [user_id, since if since is not None else float("-inf"),
             until if until is not None else float("inf"), limit],
        ).fetchall()
        return [SessionScore(*row) for row in rows]

    async def weekly_trends(
        self, user_id: str, since: float | None = None, until: float | None = None
    ) -> list[WeekTrend]:
        """Per-week averages of a user's session scores, oldest week first."""
        return await self._read(self._weekly_trends, user_id, since, until)

    def _weekly_trends(self, user_id: str, since: float | None, until: float | None) -> list[WeekTrend]:
        assert self._rdb is not None
        rows = self._rdb.execute(
            "SELECT date(started_at, 'unixepoch', '-6 days', 'weekday 1') AS week, COUNT(*),"
            " AVG(pitch_accuracy), AVG(rhythm_accuracy), AVG(dynamics_range), AVG(overall_score),"
            " COALESCE(SUM(duration_s), 0) FROM practice_sessions"
            " WHERE user_id = ? AND started_at >= ? AND started_at < ?"
            " GROUP BY week ORDER BY week",
            [user_id, since if since is not None else float("-inf"),
             until if until is not None else float("inf")],
        ).fetchall()
        return [WeekTrend(str(w), int(n), p, r, d, o, float(sec)) for w, n, p, r, d, o, sec in rows]

    async def session_detail(self, session_id: str, recent_events: int = 20) -> SessionDetail | None:
        """Everything known about one session, or ``None`` when no result of it arrived."""
        return await self._read(self._session_detail, session_id, recent_events)

    def _session_detail(self, session_id: str, recent_events: int) -> SessionDetail | None:
        db = self._rdb
        assert db is not None
        row = db.execute(
            "SELECT s.session_id, s.user_id, s.edge_id, s.started_at, s.last_result_at, s.results_count,"
            " a.pitch_accuracy, a.rhythm_accuracy, a.dynamics_range, a.overall_score, a.duration_s,"
            " a.feedback, a.completed_at"
            " FROM practice_sessions s LEFT JOIN analysis_results a ON a.session_id = s.session_id"
            " WHERE s.session_id = ?",
            [session_id],
        ).fetchone()
        if row is None:
            return None
        (sid, user_id, edge_id, started_at, last_at, count, pa, ra, dr, ov, dur, feedback, completed) = row
        notes = int(db.execute(
            "SELECT COUNT(DISTINCT note_id) FROM performances WHERE session_id = ? AND type = 'note'",
            [session_id],
        ).fetchone()[0])
        verdicts = dict.fromkeys(VERDICTS, 0)
        for verdict, n in db.execute(
            "SELECT verdict, COUNT(*) FROM performances WHERE session_id = ? AND type = 'score'"
            " GROUP BY verdict", [session_id],
        ).fetchall():
            verdicts[str(verdict)] = int(n)
        mean_abs_timing = db.execute(
            "SELECT AVG(ABS(timing_ms)) FROM performances WHERE session_id = ? AND type = 'score'"
            " AND timing_ms IS NOT NULL", [session_id],
        ).fetchone()[0]
        recent = [
            json.loads(e) for (e,) in db.execute(
                "SELECT event FROM performances WHERE session_id = ? ORDER BY seq DESC LIMIT ?",
                [session_id, recent_events],
            ).fetchall()
        ]
        recent.reverse()
        return SessionDetail(
            session_id=sid, user_id=user_id, edge_id=edge_id, started_at=started_at,
            last_result_at=last_at, results_count=count, notes=notes, verdicts=verdicts,
            mean_abs_timing_ms=mean_abs_timing,
            summary=json.loads(feedback) if feedback else None, completed_at=completed,
            scores=SessionScore(sid, edge_id, started_at, count, pa, ra, dr, ov, dur),
            recent_events=recent,
        )

    # -- counting (tests, benchmarks, operators) ----------------------------------------------------

    async def count(self, table: Literal["users", "practice_sessions", "performances",
                                         "analysis_results", "ingested_messages"]) -> int:
        return await self._read(lambda: int(self._rdb.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]))  # type: ignore[union-attr]

    async def result_keys(self) -> list[tuple[str, int, int]]:
        """Every stored result as (session_id, seq, ingest position), in the order they were ingested.

        The ingest position orders results by the message that first carried them, so a test can check
        that each session's results arrived in ``seq`` order.
        """
        return await self._read(self._result_keys)

    def _result_keys(self) -> list[tuple[str, int, int]]:
        assert self._rdb is not None
        return [
            (str(s), int(q), int(o)) for s, q, o in self._rdb.execute(
                "SELECT p.session_id, p.seq, m.ingest_order FROM performances p"
                " JOIN ingested_messages m ON m.msg_id = p.msg_id ORDER BY m.ingest_order, p.seq"
            ).fetchall()
        ]


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


SQLITE_INT_MAX = 2**63 - 1


def _int(value: Any) -> int | None:
    """An integer field of an event, or ``None`` when it is not a number SQLite can hold."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    number = int(value)
    return number if -SQLITE_INT_MAX <= number <= SQLITE_INT_MAX else None


def _performance_row(session_id: str, e: dict[str, Any], msg_id: str) -> tuple[Any, ...]:
    return (
        session_id, int(e["seq"]), str(e["type"]), float(e["t"]), _int(e.get("note_id")),
        _int(e.get("pitch", e.get("played_pitch"))), _int(e.get("velocity")), _num(e.get("end")),
        e.get("verdict") if isinstance(e.get("verdict"), str) else None, _num(e.get("timing_ms")),
        json.dumps(e, separators=(",", ":")), msg_id,
    )
