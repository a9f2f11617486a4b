"""The ``Progress`` gRPC service: a student's sessions over time, weekly trends, one session's detail.

Reads the :class:`ProgressStore` that the ingest fills. Request checks raise
:class:`InvalidRequest` / :class:`UnknownSession`, which the control plane's guard interceptor maps to
INVALID_ARGUMENT / NOT_FOUND. The proto ↔ domain converters are pure functions.
"""

from __future__ import annotations

import json
import time

import grpc

from ._proto.seminote.v1 import progress_pb2, progress_pb2_grpc
from .errors import InvalidRequest, UnknownSession
from .progress_store import (
    SESSIONS_LIMIT_DEFAULT,
    SESSIONS_LIMIT_MAX,
    ProgressStore,
    SessionDetail,
    SessionScore,
    WeekTrend,
)

__all__ = ["PROGRESS_SERVICE", "ProgressService", "detail_to_pb", "score_to_pb", "week_to_pb"]

PROGRESS_SERVICE = progress_pb2.DESCRIPTOR.services_by_name["Progress"].full_name
MAX_ID_CHARS = 256
RECENT_EVENTS_DEFAULT = 20
RECENT_EVENTS_MAX = 1_000


def score_to_pb(s: SessionScore) -> progress_pb2.SessionScore:
    pb = progress_pb2.SessionScore(session_id=s.session_id, edge_id=s.edge_id, started_at=s.started_at,
                                   results=s.results_count)
    for name in ("pitch_accuracy", "rhythm_accuracy", "dynamics_range", "overall_score", "duration_s"):
        value = getattr(s, name)
        if value is not None:
            setattr(pb, name, value)
    return pb


def week_to_pb(w: WeekTrend) -> progress_pb2.WeekTrend:
    pb = progress_pb2.WeekTrend(week_start=w.week_start, sessions=w.sessions, practice_s=w.practice_s)
    for name in ("avg_pitch_accuracy", "avg_rhythm_accuracy", "avg_dynamics_range", "avg_overall_score"):
        value = getattr(w, name)
        if value is not None:
            setattr(pb, name, value)
    return pb


def detail_to_pb(d: SessionDetail) -> progress_pb2.SessionDetail:
    pb = progress_pb2.SessionDetail(
        session_id=d.session_id, user_id=d.user_id, edge_id=d.edge_id, started_at=d.started_at,
        last_result_at=d.last_result_at, results=d.results_count, notes=d.notes, verdicts=d.verdicts,
        scores=score_to_pb(d.scores),
        summary_json=json.dumps(d.summary, separators=(",", ":")) if d.summary is not None else "",
        recent_events_json=[json.dumps(e, separators=(",", ":")) for e in d.recent_events],
    )
    if d.mean_abs_timing_ms is not None:
        pb.mean_abs_timing_ms = d.mean_abs_timing_ms
    if d.completed_at is not None:
        pb.completed_at = d.completed_at
    return pb


def _check_id(field: str, value: str) -> str:
    if not value:
        raise InvalidRequest(field, "is required")
    if len(value) > MAX_ID_CHARS:
        raise InvalidRequest(field, f"longer than {MAX_ID_CHARS} characters")
    return value


class ProgressService(progress_pb2_grpc.ProgressServicer):
    """Answers progress queries from the progress store."""

    def __init__(self, store: ProgressStore) -> None:
        self.store = store

    async def GetProgress(  # noqa: N802 - gRPC method name
        self, request: progress_pb2.ProgressRequest, context: grpc.aio.ServicerContext
    ) -> progress_pb2.ProgressReply:
        user_id = _check_id("user_id", request.user_id)
        if request.since < 0 or request.until < 0:
            raise InvalidRequest("since", "times are Unix seconds, not negative")
        if request.until and request.until <= request.since:
            raise InvalidRequest("until", "must be after since")
        if request.limit > SESSIONS_LIMIT_MAX:
            raise InvalidRequest("limit", f"at most {SESSIONS_LIMIT_MAX}")
        since = request.since or None
        until = request.until or time.time() + 1
        sessions = await self.store.sessions(user_id, since, until, request.limit or SESSIONS_LIMIT_DEFAULT)
        weeks = await self.store.weekly_trends(user_id, since, until)
        return progress_pb2.ProgressReply(user_id=user_id, sessions=[score_to_pb(s) for s in sessions],
                                          weeks=[week_to_pb(w) for w in weeks])

    async def GetSessionDetail(  # noqa: N802 - gRPC method name
        self, request: progress_pb2.SessionDetailRequest, context: grpc.aio.ServicerContext
    ) -> progress_pb2.SessionDetail:
        session_id = _check_id("session_id", request.session_id)
        if request.recent_events > RECENT_EVENTS_MAX:
            raise InvalidRequest("recent_events", f"at most {RECENT_EVENTS_MAX}")
        detail = await self.store.session_detail(session_id, request.recent_events or RECENT_EVENTS_DEFAULT)
        if detail is None:
            raise UnknownSession(session_id)
        return detail_to_pb(detail)
