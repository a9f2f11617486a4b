"""The edge outbox: what it keeps, in one transaction with the local record, its bound and its ids."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from edge_node.errors import OutboxError
from edge_node.events import Event
from edge_node.outbox import Outbox, OutboxReader
from edge_node.settings import SyncSettings


def note(seq: int) -> Event:
    return {"type": "note", "seq": seq, "t": seq / 100, "note_id": seq, "pitch": 60, "velocity": 80,
            "end": None, "confidence": 0.9, "source": "kernel"}


def summary(seq: int) -> Event:
    return {"type": "summary", "seq": seq, "t": 1.0, "pitch_accuracy": 1.0, "rhythm_accuracy": 1.0,
            "dynamics_range": 10.0, "overall_score": 100.0, "notes_played": 3, "duration_s": 1.0}


def settings(tmp_path: Path, **kw: object) -> SyncSettings:
    return SyncSettings(outbox_path=tmp_path / "outbox.db", **kw)  # type: ignore[arg-type]


async def test_only_note_and_score_events_are_kept_in_compact_batches(tmp_path: Path) -> None:
    async with Outbox(settings(tmp_path, batch_max_results=4), "edge-a") as outbox:
        events: list[Event] = []
        for seq in range(0, 30, 3):
            events += [{"type": "pitch", "seq": seq, "t": 0.0, "f0_hz": 440.0, "midi": 69.0, "confidence": 1},
                       note(seq + 1),
                       {"type": "score", "seq": seq + 2, "t": 0.0, "verdict": "correct", "ref_index": 0,
                        "expected_pitch": 60, "played_pitch": 60, "timing_ms": 1.0, "velocity_delta": 0}]
        assert outbox.record_events("s1", "alice", events) == 20
        await outbox.flush()
        async with OutboxReader(tmp_path / "outbox.db") as reader:
            rows = await reader.fetch(100)
    assert [r.results for r in rows] == [4, 4, 4, 4, 4]
    seqs = [e["seq"] for r in rows for e in json.loads(r.payload)["events"]]
    assert seqs == sorted(seqs) and len(seqs) == 20
    assert all(r.kind == "events" and r.session_id == "s1" for r in rows)
    body = json.loads(rows[0].payload)
    assert (body["edge_id"], body["session_id"], body["user_id"], body["v"]) == ("edge-a", "s1", "alice", 1)


async def test_rows_and_local_record_are_written_in_one_transaction(tmp_path: Path) -> None:
    async with Outbox(settings(tmp_path), "edge-a") as outbox:
        outbox.record_events("s1", "alice", [note(1), note(2)])
        outbox.record_summary("s1", "alice", summary(3))
        await outbox.flush()
        record = await outbox.session("s1")
    assert record is not None
    assert (record.results_recorded, record.last_seq, record.has_summary) == (2, 2, True)
    conn = sqlite3.connect(tmp_path / "outbox.db")
    kinds = [k for (k,) in conn.execute("SELECT kind FROM outbox ORDER BY id")]
    conn.close()
    assert kinds == ["events", "summary"]


async def test_a_full_outbox_refuses_new_batches_but_keeps_summaries_and_counts_the_loss(tmp_path: Path) -> None:
    s = settings(tmp_path, outbox_max_rows=3, outbox_summary_reserve_rows=1, batch_max_results=2)
    async with Outbox(s, "edge-a") as outbox:
        outbox.record_events("s1", "alice", [note(i) for i in range(10)])  # 5 rows wanted, 3 fit
        outbox.record_summary("s1", "alice", summary(10))
        await outbox.flush()
        assert outbox.rows == 4  # 3 batches + the summary in the reserve
        assert outbox.metrics.registry.get_sample_value("seminote_outbox_fill_ratio") == 4 / 3
        assert outbox.metrics.registry.get_sample_value("seminote_outbox_full") == 1
        record = await outbox.session("s1")
        assert record is not None
        assert (record.results_recorded, record.results_dropped, record.has_summary) == (6, 4, True)
        assert outbox.dropped_results == 4
        # Once the relay (its own connection, as in the relay process) frees room, new batches are
        # taken again: the bound counts the rows in the file, not what this process wrote.
        async with OutboxReader(tmp_path / "outbox.db") as reader:
            rows = await reader.fetch(2)
            await reader.delete([r.id for r in rows])
            assert await reader.count() == 2
        outbox.record_events("s1", "alice", [note(11), note(12)])
        await outbox.flush()
        assert outbox.rows == 3
        assert outbox.metrics.registry.get_sample_value("seminote_outbox_rows") == 3
        assert outbox.metrics.registry.get_sample_value("seminote_outbox_dropped_results_total") == 4


async def test_message_ids_are_never_reused_after_deletes_or_a_reopen(tmp_path: Path) -> None:
    s = settings(tmp_path)
    async with Outbox(s, "edge-a") as outbox, OutboxReader(s.outbox_path) as reader:
        outbox.record_events("s1", "alice", [note(1)])
        await outbox.flush()
        first = (await reader.fetch(1))[0]
        await reader.delete([first.id])
        epoch = outbox.epoch
        assert reader.epoch == epoch  # both connections name messages alike
    async with Outbox(s, "edge-a") as outbox, OutboxReader(s.outbox_path) as reader:
        assert outbox.epoch == epoch  # the file remembers its epoch
        outbox.record_events("s1", "alice", [note(2)])
        await outbox.flush()
        second = (await reader.fetch(1))[0]
    assert second.id > first.id  # AUTOINCREMENT: a deleted id is not handed out again
    assert first.msg_id("edge-a", epoch) != second.msg_id("edge-a", epoch)
    (tmp_path / "outbox.db").unlink()
    async with Outbox(s, "edge-a") as outbox:
        assert outbox.epoch != epoch  # a re-created file gets a new epoch, so ids cannot collide


async def test_unflushed_results_are_written_at_close_and_survive_a_reopen(tmp_path: Path) -> None:
    s = settings(tmp_path, flush_interval_ms=60_000)
    async with Outbox(s, "edge-a") as outbox:
        outbox.record_events("s1", "alice", [note(1), note(2), note(3)])
    async with Outbox(s, "edge-a") as outbox, OutboxReader(s.outbox_path) as reader:
        assert outbox.rows == 1
        rows = await reader.fetch(10)
        assert rows[0].results == 3


async def test_misuse_is_a_clear_error(tmp_path: Path) -> None:
    outbox = Outbox(settings(tmp_path), "edge-a")
    with pytest.raises(OutboxError):
        outbox.record_events("s1", "alice", [note(1)])
    await outbox.start()
    with pytest.raises(OutboxError, match="summary"):
        outbox.record_summary("s1", "alice", note(1))
    await outbox.aclose()
    await outbox.aclose()  # twice is fine
    with pytest.raises(OutboxError, match="closed"):
        await outbox.start()


async def test_record_event_takes_what_a_session_sends_and_never_raises(tmp_path: Path) -> None:
    outbox = Outbox(settings(tmp_path), "edge-a")
    async with outbox:
        for event in ({"type": "onset", "seq": 0, "t": 0.0, "strength": 1.0}, note(1),
                      {"type": "error", "seq": 2, "t": 0.0, "code": "x", "message": "y"}, summary(3)):
            outbox.record_event("s1", "alice", event)
        await outbox.flush()
        record = await outbox.session("s1")
        assert record is not None and (record.results_recorded, record.has_summary) == (1, True)
    outbox.record_event("s1", "alice", note(4))  # after close: counted, not raised
    assert outbox.dropped_results == 1


async def test_the_control_plane_agent_reports_the_outbox_depth(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from edge_node.agent import SessionManagerHost

    manager = SimpleNamespace(sessions={}, accepting=True, results=None)
    host = SessionManagerHost(manager)  # type: ignore[arg-type]
    assert host.agent_metrics().outbox_depth == 0
    async with Outbox(settings(tmp_path, batch_max_results=1), "edge-a") as outbox:
        manager.results = outbox
        outbox.record_events("s1", "alice", [note(1), note(2), note(3)])
        await outbox.flush()
        assert host.agent_metrics().outbox_depth == 3
