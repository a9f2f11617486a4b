"""End to end through every fault: edge outbox → relay → NATS JetStream → ingest → progress store.

Each test runs the real processes (nats-server, a producing edge with the real outbox and relay, the
ingest worker), injects one fault while results are flowing, and then counts: every result stored
exactly once (none missing, none carried twice), every summary stored, and in the stream each
session's results appear in ``seq`` order. ``SEMINOTE_SYNC_RESULTS`` sets the total (10,000 in CI,
100,000 for the acceptance run).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from .conftest import SYNC_RESULTS
from .harness import NatsNode, SyncRig, stream_leader, stream_order_violations

SESSIONS = 20
RATE_PER_S = 2500.0  # results/s the edge produces: a fault lands mid-stream
FAULT_AFTER_FRACTION = 0.3
EDGE_EXIT_POLLS = 300  # x 0.1 s
REPORT = os.environ.get("SEMINOTE_SYNC_REPORT")  # append per-fault counts here (JSON lines)


def make_rig(tmp_path: Path, urls: list[str], **kw: float | int) -> SyncRig:
    return SyncRig(tmp_path / "rig", urls, SESSIONS, SYNC_RESULTS // SESSIONS, RATE_PER_S, **kw)  # type: ignore[arg-type]


def append_line(path: Path, line: str) -> None:
    with path.open("a") as f:
        f.write(line + "\n")


async def run_through(rig: SyncRig, fault: Callable[[], Awaitable[None]] | None) -> dict[str, int]:
    """Start ingest and edge, inject ``fault`` once some results are in the outbox, count everything."""
    started = time.monotonic()
    try:
        rig.ingest.start()
        rig.edge.start()
        await rig.wait_produced(int(rig.expected_results * FAULT_AFTER_FRACTION))
        if fault is not None:
            await fault()
        await rig.wait_stored(timeout_s=60 + rig.expected_results / 500)
        # The edge exits once its outbox is empty: nothing is left behind on the edge either.
        for _ in range(EDGE_EXIT_POLLS):
            if not rig.edge.running:
                break
            await asyncio.sleep(0.1)
        assert not rig.edge.running, rig.edge.log_tail()
        audit = rig.audit()
        assert audit.missing_or_extra(rig.sessions, rig.results_per_session) == []
        assert audit.results == rig.expected_results
        assert audit.results_carried_by_messages == rig.expected_results  # no result in two messages
        assert audit.summaries == rig.sessions
        assert sum(audit.session_counts.values()) == rig.expected_results
        messages, stream_duplicates, order_violations = await stream_order_violations(rig.nats_urls)
        assert order_violations == 0
        counts = {"messages": messages, "stream_duplicates": stream_duplicates,
                  "arrival_reorders": audit.arrival_reorders()}
        if REPORT:  # acceptance runs: one JSON line per fault with what was counted
            line = json.dumps({
                "test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0],
                "results_expected": rig.expected_results, "results_stored": audit.results,
                "results_carried_by_messages": audit.results_carried_by_messages,
                "summaries_stored": audit.summaries, "stream_order_violations": order_violations,
                "seconds": round(time.monotonic() - started, 1), **counts})
            await asyncio.to_thread(append_line, Path(REPORT), line)
        return counts
    finally:
        rig.stop_all()


async def test_all_results_arrive_once_without_faults(tmp_path: Path, nats_node: NatsNode) -> None:
    rig = make_rig(tmp_path, [nats_node.url])
    counts = await run_through(rig, None)
    assert counts["stream_duplicates"] == 0
    assert counts["arrival_reorders"] == 0


async def test_nats_sigkilled_and_restarted_mid_stream_loses_and_duplicates_nothing(
    tmp_path: Path, nats_node: NatsNode
) -> None:
    rig = make_rig(tmp_path, [nats_node.url])

    async def fault() -> None:
        nats_node.kill()
        await asyncio.sleep(1.5)
        nats_node.start()

    await run_through(rig, fault)


async def test_edge_sigkilled_mid_publish_and_restarted_resumes_from_its_outbox(
    tmp_path: Path, nats_node: NatsNode
) -> None:
    rig = make_rig(tmp_path, [nats_node.url])

    async def fault() -> None:
        rig.edge.kill()
        await asyncio.sleep(0.5)
        rig.edge.start()

    await run_through(rig, fault)


async def test_ingest_sigkilled_and_restarted_applies_everything_once(
    tmp_path: Path, nats_node: NatsNode
) -> None:
    rig = make_rig(tmp_path, [nats_node.url])

    async def fault() -> None:
        rig.ingest.kill()
        await asyncio.sleep(1.0)
        rig.ingest.start()

    await run_through(rig, fault)


async def test_nats_down_longer_than_dedup_window_while_edge_produces(
    tmp_path: Path, nats_node: NatsNode
) -> None:
    rig = make_rig(tmp_path, [nats_node.url], duplicate_window_s=1.0)

    async def fault() -> None:
        produced = rig.outbox_produced()
        nats_node.kill()
        await asyncio.sleep(3.0)  # three dedup windows
        assert rig.outbox_produced() > produced, "the edge must keep recording while NATS is away"
        nats_node.start()

    await run_through(rig, fault)


@pytest.mark.timeout(300)
async def test_one_node_of_three_killed_with_r3_streams(
    tmp_path: Path, nats_cluster: list[NatsNode]
) -> None:
    rig = make_rig(tmp_path, [n.url for n in nats_cluster], replicas=3)

    async def fault() -> None:
        leader, replicas = await stream_leader(rig.nats_urls)
        assert replicas == 3
        victim = next(n for n in nats_cluster if n.name == leader)
        victim.kill()  # the R3 stream's leader: the other two elect a new one and carry on

    await run_through(rig, fault)
