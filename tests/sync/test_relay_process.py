"""The relay as a child process of the edge: lower priority, counters in the edge's metrics, restarted
when it dies, gone when the edge is SIGKILLed, never two on one outbox, drained at shutdown.

Real nats-server (with the results stream the control plane would create) and real relay processes.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from control_plane.jetstream import results_stream_config
from control_plane.settings import ResultSyncSettings
from edge_node.events import Event
from edge_node.outbox import Outbox
from edge_node.relay_process import ResultSync, lock_path
from edge_node.settings import SyncSettings

from .harness import PRODUCER, ManagedProcess, NatsNode

WAIT_S = 20.0


def note(seq: int) -> Event:
    return {"type": "note", "seq": seq, "t": seq / 100, "note_id": seq, "pitch": 60, "velocity": 80,
            "end": None, "confidence": 0.9, "source": "kernel"}


@pytest.fixture
async def nats_url(nats_node: NatsNode) -> AsyncIterator[str]:
    """The node with the results stream the relay publishes to (the control plane makes it in production)."""
    nc = await nats.connect(nats_node.url)
    try:
        await nc.jetstream().add_stream(results_stream_config(ResultSyncSettings()))
    finally:
        await nc.close()
    yield nats_node.url


async def stream_messages(url: str) -> int:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info(ResultSyncSettings().stream_name)
        return int(info.state.messages)
    finally:
        await nc.close()


async def eventually(check: object, what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def settings(tmp_path: Path, url: str, **kw: object) -> SyncSettings:
    values: dict[str, object] = {"flush_interval_ms": 20, "batch_max_results": 5, **kw}
    return SyncSettings(enabled=True, outbox_path=tmp_path / "outbox.db", nats_urls=[url], **values)  # type: ignore[arg-type]


async def test_the_relay_runs_in_its_own_lower_priority_process_and_reports_to_the_edges_metrics(
    tmp_path: Path, nats_url: str
) -> None:
    async with ResultSync(settings(tmp_path, nats_url), "edge-rp") as sync:
        registry = sync.outbox.metrics.registry

        async def relay_up() -> bool:
            return sync.relay.pid is not None

        await eventually(relay_up, "the relay process")
        pid = sync.relay.pid
        assert pid is not None and pid != os.getpid()
        lowered = min(19, os.getpriority(os.PRIO_PROCESS, 0) + sync.relay.settings.relay_niceness)
        assert sync.relay.settings.relay_niceness > 0
        assert os.getpriority(os.PRIO_PROCESS, pid) == lowered
        assert registry.get_sample_value("seminote_relay_running") == 1
        sync.outbox.record_events("s1", "alice", [note(i) for i in range(50)])

        async def published() -> bool:
            return registry.get_sample_value("seminote_relay_published_results_total") == 50

        await eventually(published, "the relay's report of 50 published results")
        assert registry.get_sample_value("seminote_relay_published_rows_total") == 10
        assert registry.get_sample_value("seminote_relay_nats_connected") == 1
        assert await stream_messages(nats_url) == 10

        async def emptied() -> bool:  # the edge reads the depth the relay process left in the file
            return sync.outbox.rows == 0 and registry.get_sample_value("seminote_outbox_rows") == 0

        await eventually(emptied, "the outbox depth to reach 0")
    assert registry.get_sample_value("seminote_relay_running") == 0
    assert not alive(pid)


async def test_a_relay_process_that_dies_is_restarted_and_loses_nothing(tmp_path: Path, nats_url: str) -> None:
    async with ResultSync(settings(tmp_path, nats_url), "edge-rp") as sync:
        registry = sync.outbox.metrics.registry

        async def done(messages: int, results: int) -> bool:
            return (await stream_messages(nats_url) == messages and await sync.outbox.refresh_rows() == 0
                    and registry.get_sample_value("seminote_relay_published_results_total") == results)

        sync.outbox.record_events("s1", "alice", [note(i) for i in range(20)])
        await eventually(lambda: done(4, 20), "the first 4 rows published, deleted and reported")
        first = sync.relay.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        sync.outbox.record_events("s1", "alice", [note(i) for i in range(20, 40)])

        async def restarted() -> bool:
            return sync.relay.pid not in (None, first)

        await eventually(restarted, "a new relay process")
        # the new process publishes the rows written meanwhile, and its counts continue the totals
        await eventually(lambda: done(8, 40), "all 8 rows, 40 results counted across both processes")
        assert registry.get_sample_value("seminote_relay_restarts_total") == 1


async def test_a_sigkilled_edge_leaves_no_relay_process_behind(
    tmp_path: Path, nats_url: str, processes: list[ManagedProcess]
) -> None:
    edge = ManagedProcess("edge", [
        sys.executable, str(PRODUCER), "--outbox", str(tmp_path / "outbox.db"), "--nats", nats_url,
        "--sessions", "4", "--results", "100000", "--rate", "500",
    ], tmp_path / "edge.log", {**os.environ, "PYTHONUNBUFFERED": "1"})
    processes.append(edge)
    edge.start()
    pid = 0
    deadline = time.monotonic() + WAIT_S
    while not pid:
        assert time.monotonic() < deadline and edge.running, edge.log_tail()
        for line in edge.log_path.read_text().splitlines():
            if line.startswith("producer started, relay pid "):
                pid = int(line.rsplit(" ", 1)[1])
        await asyncio.sleep(0.05)
    await eventually(lambda: stream_messages_positive(nats_url), "the relay publishing")
    assert alive(pid)
    edge.kill()  # SIGKILL: no clean-up code of the edge runs

    async def gone() -> bool:
        return not alive(pid)

    await eventually(gone, "the orphaned relay process to exit", timeout_s=5.0)


async def stream_messages_positive(url: str) -> bool:
    return await stream_messages(url) > 0


async def test_a_relay_waits_while_another_holds_the_outbox(tmp_path: Path, nats_url: str) -> None:
    s = settings(tmp_path, nats_url)
    with lock_path(s.outbox_path).open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a relay that is still exiting would
        async with ResultSync(s, "edge-rp") as sync:
            sync.outbox.record_events("s1", "alice", [note(i) for i in range(10)])
            await sync.outbox.flush()
            await asyncio.sleep(1.0)
            assert await stream_messages(nats_url) == 0  # two relays on one outbox could reorder a session
            fcntl.flock(held, fcntl.LOCK_UN)

            async def published() -> bool:
                return await stream_messages(nats_url) == 2

            await eventually(published, "the relay to publish once the lock is free")


async def test_drain_publishes_everything_and_the_relay_process_exits_0(tmp_path: Path, nats_url: str) -> None:
    sync = ResultSync(settings(tmp_path, nats_url, flush_interval_ms=60_000), "edge-rp")
    await sync.start()
    try:
        sync.outbox.record_events("s1", "alice", [note(i) for i in range(500)])  # still in memory
        assert await sync.drain(10.0)
        assert (sync.relay.pid, sync.relay.exit_code) == (None, 0)  # it exited after reporting
        assert sync.relay.restarts == 0
        assert await stream_messages(nats_url) == 100
    finally:
        await sync.aclose()
    await sync.aclose()  # twice is fine


async def test_rows_written_by_another_process_are_published_without_a_signal(tmp_path: Path, nats_url: str) -> None:
    s = settings(tmp_path, nats_url)
    async with ResultSync(s, "edge-rp") as sync, Outbox(s, "edge-rp") as worker:  # as a worker process writes
        await eventually(lambda: stream_messages_is(nats_url, 0), "nothing yet")
        worker.record_events("w1", "bob", [note(i) for i in range(10)])
        await worker.flush()
        written = time.monotonic()
        await eventually(lambda: stream_messages_is(nats_url, 2), "the other writer's rows", timeout_s=5.0)
        assert time.monotonic() - written < 2.0  # seen by polling the file (50 ms), not a 1 s timer
        await eventually(lambda: outbox_empty(sync), "the edge's depth to show the other writer's rows gone")


async def stream_messages_is(url: str, n: int) -> bool:
    return await stream_messages(url) == n


async def outbox_empty(sync: ResultSync) -> bool:
    return await sync.outbox.refresh_rows() == 0
