"""``seminotectl progress`` and ``seminotectl sessions show``: queries over the synced results.

``--since`` / ``--until`` take an ISO date or date-time (UTC unless it says otherwise), Unix seconds,
or an age such as ``30d``, ``12h``, ``2w``.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from datetime import UTC, datetime
from typing import Any

from .._proto.seminote.v1 import progress_pb2, progress_pb2_grpc
from .common import EXIT_USAGE, Context, CtlError, leaf, print_json, print_pairs, print_table, to_dict

_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_AGE_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def parse_time(text: str, now: float | None = None) -> float:
    """Unix seconds from ``2026-01-31``, ``2026-01-31T08:00``, ``1767225600`` or an age like ``30d``."""
    value = text.strip()
    age = _AGE.match(value)
    if age:
        return (now if now is not None else time.time()) - float(age.group(1)) * _AGE_UNIT_S[age.group(2)]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise CtlError(f"cannot read time {text!r}: use 2026-01-31, 2026-01-31T08:00, Unix seconds or 30d",
                       EXIT_USAGE) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M") if ts else "-"


def _num(message: Any, name: str, fmt: str = "{:.2f}") -> str:
    return fmt.format(getattr(message, name)) if message.HasField(name) else "-"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("progress", help="a student's sessions over time with scores, and weekly trends")
    p.add_argument("-o", "--output", choices=("table", "json"), default=argparse.SUPPRESS, help="output format")
    p.add_argument("--user", required=True, help="the student's user id")
    p.add_argument("--since", default=None, help="sessions started at or after (date, time, Unix s, or 30d)")
    p.add_argument("--until", default=None, help="sessions started before (same forms as --since)")
    p.add_argument("--limit", type=int, default=0, help="at most this many sessions, oldest first")
    p.set_defaults(func=cmd_progress)


def add_sessions_show(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``sessions show ID``, registered by the ``sessions`` command group."""
    c = leaf(cmds, "show", help="one session's synced results: scores, verdicts, summary")
    c.add_argument("session_id", metavar="ID")
    c.add_argument("--events", type=int, default=10, help="how many of its latest results to show")
    c.set_defaults(func=cmd_session_show)


def _stub(ctx: Context) -> progress_pb2_grpc.ProgressStub:
    return progress_pb2_grpc.ProgressStub(ctx.channel)


def cmd_progress(args: argparse.Namespace, ctx: Context) -> int:
    if args.limit < 0:
        raise CtlError("--limit must not be negative", EXIT_USAGE)
    request = progress_pb2.ProgressRequest(
        user_id=args.user,
        since=parse_time(args.since) if args.since else 0.0,
        until=parse_time(args.until) if args.until else 0.0,
        limit=args.limit,
    )
    reply = ctx.call(_stub(ctx).GetProgress, request)
    if ctx.output == "json":
        print_json(to_dict(reply))
        return 0
    print_table(
        ["STARTED (UTC)", "SESSION", "EDGE", "RESULTS", "PITCH", "RHYTHM", "DYNAMICS", "SCORE", "MINUTES"],
        [[_iso(s.started_at), s.session_id, s.edge_id, s.results, _num(s, "pitch_accuracy"),
          _num(s, "rhythm_accuracy"), _num(s, "dynamics_range", "{:.1f}"), _num(s, "overall_score", "{:.1f}"),
          f"{s.duration_s / 60:.1f}" if s.HasField("duration_s") else "-"] for s in reply.sessions],
    )
    print()
    print_table(
        ["WEEK OF", "SESSIONS", "AVG PITCH", "AVG RHYTHM", "AVG DYNAMICS", "AVG SCORE", "PRACTICE MIN"],
        [[w.week_start, w.sessions, _num(w, "avg_pitch_accuracy"), _num(w, "avg_rhythm_accuracy"),
          _num(w, "avg_dynamics_range", "{:.1f}"), _num(w, "avg_overall_score", "{:.1f}"),
          f"{w.practice_s / 60:.1f}"] for w in reply.weeks],
    )
    return 0


def cmd_session_show(args: argparse.Namespace, ctx: Context) -> int:
    if not 0 <= args.events <= 1000:
        raise CtlError("--events must be between 0 and 1000", EXIT_USAGE)
    reply = ctx.call(_stub(ctx).GetSessionDetail, progress_pb2.SessionDetailRequest(
        session_id=args.session_id, recent_events=args.events))
    if ctx.output == "json":
        data = to_dict(reply)
        data["summary"] = json.loads(reply.summary_json) if reply.summary_json else None
        data["recent_events"] = [json.loads(e) for e in reply.recent_events_json]
        del data["summary_json"], data["recent_events_json"]
        print_json(data)
        return 0
    s = reply.scores
    print_pairs({
        "session": reply.session_id, "user": reply.user_id, "edge": reply.edge_id,
        "started (UTC)": _iso(reply.started_at), "last result (UTC)": _iso(reply.last_result_at),
        "results": reply.results, "notes": reply.notes,
        "verdicts": ", ".join(f"{k} {v}" for k, v in sorted(reply.verdicts.items())) or "-",
        "mean |timing| ms": _num(reply, "mean_abs_timing_ms", "{:.1f}"),
        "pitch accuracy": _num(s, "pitch_accuracy"), "rhythm accuracy": _num(s, "rhythm_accuracy"),
        "dynamics range": _num(s, "dynamics_range", "{:.1f}"), "overall score": _num(s, "overall_score", "{:.1f}"),
        "completed (UTC)": _iso(reply.completed_at) if reply.HasField("completed_at") else "not yet",
    })
    if reply.recent_events_json and args.events:
        print()
        print_table(["SEQ", "T", "TYPE", "DETAIL"], [
            [e["seq"], f"{e['t']:.3f}", e["type"],
             f"pitch {e.get('pitch')} end {e.get('end')}" if e["type"] == "note"
             else f"{e.get('verdict')} timing {e.get('timing_ms')} ms"]
            for e in map(json.loads, reply.recent_events_json)
        ])
    return 0
