"""Progress queries: the store's answers with exact numbers, and the whole path through the control plane.

The end-to-end test runs a real nats-server, a real control plane with the ingest enabled, the edge's
real outbox (in this process) and relay process, and ``seminotectl`` as a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from control_plane.app import ControlPlane
from control_plane.ctl.progress import parse_time
from control_plane.progress_store import ProgressStore, ResultMessage
from control_plane.settings import (
    AuthSettings,
    ControlSettings,
    GatewaySettings,
    GrpcSettings,
    ResultSyncSettings,
)
from edge_node.relay_process import ResultSync
from edge_node.settings import SyncSettings

from .harness import NatsNode

ADMIN = "admin-token-0123456789ab"
CTL_TIMEOUT_S = 60
MONDAY = datetime(2026, 3, 2, 9, 0, tzinfo=UTC).timestamp()  # a Monday
DAY_S = 86400.0


def events_message(session: str, user: str, started_at: float, seqs: list[int], msg_id: str) -> ResultMessage:
    events = []
    for seq in seqs:
        if seq % 2:
            events.append({"type": "note", "seq": seq, "t": seq / 10, "note_id": seq // 4, "pitch": 60,
                           "velocity": 70, "end": None})
        else:
            events.append({"type": "score", "seq": seq, "t": seq / 10, "ref_index": seq, "expected_pitch": 60,
                           "played_pitch": 60, "verdict": "correct" if seq % 4 else "wrong_pitch",
                           "timing_ms": 10.0 if seq % 4 else -30.0, "velocity_delta": 0})
    return ResultMessage(msg_id, "seminote.results.e1.events", "e1", session, user, started_at, "events",
                         tuple(events))


def summary_message(session: str, user: str, started_at: float, score: float, msg_id: str) -> ResultMessage:
    summary = {"type": "summary", "seq": 1000, "t": 60.0, "pitch_accuracy": score / 100,
               "rhythm_accuracy": score / 200, "dynamics_range": 20.0, "overall_score": score,
               "notes_played": 10, "duration_s": 600.0}
    return ResultMessage(msg_id, "seminote.results.e1.summary", "e1", session, user, started_at, "summary",
                         summary=summary)


async def test_store_answers_sessions_weekly_trends_and_detail_with_exact_numbers(tmp_path: Path) -> None:
    async with ProgressStore(tmp_path / "p.db") as store:
        plan = [("a1", MONDAY, 60.0), ("a2", MONDAY + 2 * DAY_S, 80.0), ("a3", MONDAY + 7 * DAY_S, 90.0)]
        for i, (sid, started, score) in enumerate(plan):
            stats = await store.apply([events_message(sid, "ann", started, [1, 2, 3, 4], f"m{i}e"),
                                       summary_message(sid, "ann", started, score, f"m{i}s")])
            assert (stats.messages, stats.results_inserted, stats.summaries) == (2, 4, 1)
        await store.apply([events_message("b1", "bob", MONDAY, [1], "mb")])
        again = await store.apply([events_message("a1", "ann", MONDAY, [1, 2, 3, 4], "m0e")])
        assert (again.messages, again.duplicate_messages, again.results_inserted) == (0, 1, 0)

        sessions = await store.sessions("ann")
        assert [s.session_id for s in sessions] == ["a1", "a2", "a3"]
        assert [s.overall_score for s in sessions] == [60.0, 80.0, 90.0]
        assert all(s.results_count == 4 for s in sessions)
        assert [s.session_id for s in await store.sessions("ann", since=MONDAY + DAY_S)] == ["a2", "a3"]

        weeks = await store.weekly_trends("ann")
        assert [(w.week_start, w.sessions) for w in weeks] == [("2026-03-02", 2), ("2026-03-09", 1)]
        assert weeks[0].avg_overall_score == pytest.approx(70.0)
        assert weeks[0].avg_pitch_accuracy == pytest.approx(0.7)
        assert weeks[0].practice_s == pytest.approx(1200.0)

        detail = await store.session_detail("a1")
        assert detail is not None
        assert detail.verdicts == {"correct": 1, "wrong_pitch": 1, "missed": 0, "extra": 0}
        assert detail.notes == 1  # seqs 1 and 3 are the same note (note_id 0), announced twice
        assert detail.mean_abs_timing_ms == pytest.approx(20.0)
        assert detail.summary is not None and detail.summary["overall_score"] == 60.0
        assert [e["seq"] for e in detail.recent_events] == [1, 2, 3, 4]
        assert await store.session_detail("nope") is None
        assert await store.count("users") == 2


def test_parse_time_reads_dates_unix_seconds_and_ages() -> None:
    assert parse_time("2026-03-02T09:00") == MONDAY
    assert parse_time("1772442000") == 1772442000.0
    assert parse_time("2w", now=MONDAY + 14 * DAY_S) == MONDAY


async def ctl(port: int, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SEMINOTE_TOKEN", "SEMINOTE_CONTROL_ADDR")}
    env.update(SEMINOTE_CONTROL_ADDR=f"127.0.0.1:{port}", SEMINOTE_TOKEN=ADMIN)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; from control_plane.ctl import main; sys.exit(main())", *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), CTL_TIMEOUT_S)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_results_from_an_edge_reach_seminotectl_through_the_control_plane(
    tmp_path: Path, nats_node: NatsNode
) -> None:
    settings = ControlSettings(
        state_dir=tmp_path / "cp", grpc=GrpcSettings(port=0, shutdown_grace_s=0.2),
        gateway=GatewaySettings(enabled=False),
        auth=AuthSettings(enrollment_tokens=["enroll-token-0123456789"], admin_tokens=[ADMIN],
                          client_api_keys=["client-key-0123456789abc"]),
        sync=ResultSyncSettings(enabled=True, nats_urls=[nats_node.url], fetch_timeout_s=0.2),
    )
    edge = SyncSettings(enabled=True, outbox_path=tmp_path / "outbox.db", nats_urls=[nats_node.url],
                        flush_interval_ms=20)
    async with ControlPlane(settings) as cp:
        assert cp.ingest is not None and cp.progress_store is not None
        await asyncio.wait_for(cp.ingest.ready.wait(), 10)
        async with ResultSync(edge, "edge-p") as sync:
            outbox = sync.outbox
            for n, sid in enumerate(("p1", "p2")):
                outbox.record_events(sid, "cat", events_message(sid, "cat", 0, list(range(1, 41)), "-").events)
                outbox.record_summary(sid, "cat", summary_message(sid, "cat", 0, 70.0 + 10 * n, "-").summary or {})
            for _ in range(200):
                if await cp.progress_store.count("analysis_results") == 2:
                    break
                await asyncio.sleep(0.05)
        assert await cp.progress_store.count("performances") == 80
        port = cp.port or 0

        rc, out, err = await ctl(port, "progress", "--user", "cat", "-o", "json")
        assert rc == 0, err
        reply = json.loads(out)
        assert [s["session_id"] for s in reply["sessions"]] == ["p1", "p2"]
        assert [s["overall_score"] for s in reply["sessions"]] == [70.0, 80.0]
        assert [s["results"] for s in reply["sessions"]] == [40, 40]
        assert len(reply["weeks"]) == 1 and reply["weeks"][0]["avg_overall_score"] == pytest.approx(75.0)

        rc, out, err = await ctl(port, "progress", "--user", "cat")
        assert rc == 0, err
        assert out.splitlines()[0].split()[:3] == ["STARTED", "(UTC)", "SESSION"]
        assert "WEEK OF" in out

        rc, out, err = await ctl(port, "sessions", "show", "p1", "-o", "json")
        assert rc == 0, err
        shown = json.loads(out)
        assert shown["results"] == 40 and shown["summary"]["overall_score"] == 70.0
        assert shown["verdicts"]["correct"] + shown["verdicts"]["wrong_pitch"] == 20

        rc, _, err = await ctl(port, "sessions", "show", "missing")
        assert rc == 1 and "NOT_FOUND" in err
        rc, _, err = await ctl(port, "progress", "--user", "")
        assert rc == 1 and "INVALID_ARGUMENT" in err
        rc, _, err = await ctl(port, "progress", "--user", "cat", "--since", "last tuesday")
        assert rc == 2 and "cannot read time" in err
