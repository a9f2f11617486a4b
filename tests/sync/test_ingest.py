"""The ingest against a real nats-server: dead letters with reasons, dedup past JetStream's window."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import nats
import pytest
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from control_plane.ingest import (
    DEADLETTER_MSG_ID_HEADER,
    DEADLETTER_REASON_HEADER,
    CorruptMessage,
    Ingest,
    parse_result_message,
)
from control_plane.jetstream import ensure_results_topology
from control_plane.progress_store import ApplyStats, ProgressStore, ResultMessage
from control_plane.settings import ResultSyncSettings

from .harness import NatsNode

SUBJECT = "seminote.results.edge-a.events"
WAIT_S = 10.0


def body(session: str = "s1", seqs: tuple[int, ...] = (1, 3), kind: str = "events") -> dict[str, object]:
    message: dict[str, object] = {"v": 1, "edge_id": "edge-a", "session_id": session, "user_id": "alice",
                                  "started_at": 1_700_000_000.0, "kind": kind}
    if kind == "events":
        message["events"] = [{"type": "note", "seq": s, "t": s / 10, "note_id": s, "pitch": 60,
                              "velocity": 70, "end": None} for s in seqs]
    else:
        message["summary"] = {"type": "summary", "seq": 99, "t": 9.0, "pitch_accuracy": 0.75,
                              "rhythm_accuracy": 0.5, "dynamics_range": 12.0, "overall_score": 70.0,
                              "notes_played": 2, "duration_s": 9.0}
    return message


def encode(message: dict[str, object]) -> bytes:
    return json.dumps(message).encode()


@pytest.fixture
async def rig(tmp_path: Path, nats_node: NatsNode) -> AsyncIterator[tuple[JetStreamContext, Ingest, ProgressStore]]:
    settings = ResultSyncSettings(nats_urls=[nats_node.url], duplicate_window_s=0.5, fetch_timeout_s=0.2)
    nc = await nats.connect(nats_node.url)
    async with ProgressStore(tmp_path / "progress.db") as store, Ingest(settings, store) as ingest:
        await asyncio.wait_for(ingest.ready.wait(), WAIT_S)
        try:
            yield nc.jetstream(), ingest, store
        finally:
            await nc.close()


async def until(predicate: object, timeout_s: float = WAIT_S) -> None:
    assert callable(predicate)
    for _ in range(int(timeout_s / 0.05)):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def test_redelivery_past_the_dedup_window_is_stored_once(
    rig: tuple[JetStreamContext, Ingest, ProgressStore],
) -> None:
    js, ingest, store = rig
    first = await js.publish(SUBJECT, encode(body()), headers={"Nats-Msg-Id": "edge-a.e1.1"})
    await asyncio.sleep(1.0)  # twice the stream's duplicate window
    second = await js.publish(SUBJECT, encode(body()), headers={"Nats-Msg-Id": "edge-a.e1.1"})
    assert not second.duplicate and second.seq == first.seq + 1  # JetStream stored it again

    async def both_seen() -> bool:
        return ingest.counters.messages + ingest.counters.duplicate_messages == 2

    await until(both_seen)
    assert ingest.counters.messages == 1
    assert ingest.counters.duplicate_messages == 1
    assert await store.count("performances") == 2
    assert await store.count("ingested_messages") == 1
    detail = await store.session_detail("s1")
    assert detail is not None and detail.results_count == 2


async def test_corrupt_messages_are_dead_lettered_with_a_reason_and_do_not_block(
    rig: tuple[JetStreamContext, Ingest, ProgressStore],
) -> None:
    js, ingest, store = rig
    good = encode(body(seqs=(1,)))
    bad: list[tuple[bytes, dict[str, str], str]] = [
        (b"\xff\xfe not utf8", {"Nats-Msg-Id": "bad-1"}, "not UTF-8"),
        (good[: len(good) // 2], {"Nats-Msg-Id": "bad-2"}, "truncated"),
        (b"[1, 2, 3]", {"Nats-Msg-Id": "bad-3"}, "not a JSON object"),
        (encode({**body(), "events": [{"type": "note", "seq": -4, "t": 0}]}), {"Nats-Msg-Id": "bad-4"},
         "seq must be a non-negative integer"),
        (good, {}, "missing or oversized Nats-Msg-Id"),
        (encode({**body(), "v": 7}), {"Nats-Msg-Id": "bad-6"}, "unsupported message version"),
    ]
    await js.publish(SUBJECT, good, headers={"Nats-Msg-Id": "good-0"})
    for data, headers, _ in bad:
        await js.publish(SUBJECT, data, headers=headers or None)
    await js.publish(SUBJECT, encode(body(seqs=(3,))), headers={"Nats-Msg-Id": "good-1"})
    await js.publish(SUBJECT.replace("events", "summary"), encode(body(kind="summary")),
                     headers={"Nats-Msg-Id": "good-2"})

    async def all_handled() -> bool:
        return ingest.counters.deadlettered == len(bad) and ingest.counters.messages == 3

    await until(all_handled)
    assert await store.count("performances") == 2
    assert await store.count("analysis_results") == 1

    sub = await js.pull_subscribe("seminote.deadletter.results", durable=None, stream="SEMINOTE_DEADLETTER",
                                  config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL,
                                                        ack_policy=AckPolicy.NONE))
    parked = await sub.fetch(len(bad), timeout=5)
    assert len(parked) == len(bad)
    for msg, (data, headers, why) in zip(parked, bad, strict=True):
        assert msg.data == data  # parked byte for byte, for a later look
        assert why in (msg.headers or {})[DEADLETTER_REASON_HEADER]
        assert (msg.headers or {}).get(DEADLETTER_MSG_ID_HEADER, "") == headers.get("Nats-Msg-Id", "")

    # The consumer is still alive and consuming after all that.
    await js.publish(SUBJECT, encode(body(session="s2", seqs=(1,))), headers={"Nats-Msg-Id": "good-3"})

    async def fourth() -> bool:
        return ingest.counters.messages == 4

    await until(fourth)


async def test_topology_setup_is_idempotent_and_raises_replicas_in_place(nats_node: NatsNode) -> None:
    nc = await nats.connect(nats_node.url)
    try:
        js = nc.jetstream()
        settings = ResultSyncSettings(nats_urls=[nats_node.url])
        first = await ensure_results_topology(js, settings)
        again = await ensure_results_topology(js, settings)
        assert (first.stream_created, first.deadletter_created, first.consumer_created) == (True, True, True)
        assert (again.stream_created, again.stream_updated, again.consumer_created) == (False, False, False)
        changed = await ensure_results_topology(js, settings.model_copy(update={"duplicate_window_s": 30.0}))
        assert changed.stream_updated
        info = await js.stream_info(settings.stream_name)
        assert info.config.duplicate_window == pytest.approx(30.0)
    finally:
        await nc.close()


@pytest.mark.parametrize(
    ("subject", "data", "reason"),
    [
        ("seminote.results.edge-b.events", encode(body()), "does not match edge_id"),
        (SUBJECT, encode({**body(), "kind": "mystery"}), "does not match"),
        (SUBJECT, encode({**body(), "events": []}), "non-empty list"),
        (SUBJECT, encode({**body(), "started_at": "yesterday"}), "started_at"),
        (SUBJECT, encode({**body(), "user_id": ""}), "user_id"),
        (SUBJECT, b'{"v": 1, "edge_id": "edge-a", "events": [', "truncated"),
        (SUBJECT, b"x" * 2048, "exceeds 1024"),
        (SUBJECT, encode({**body(), "events": [{"type": "note", "seq": 2**60, "t": 0}]}), "at most"),
        (SUBJECT, encode({**body(), "started_at": 10**400}), "unreadable payload"),
        (SUBJECT, b"[" * 500 + b"]" * 500, "not a JSON object"),
    ],
)
def test_parse_result_message_names_what_is_wrong(subject: str, data: bytes, reason: str) -> None:
    with pytest.raises(CorruptMessage) as caught:
        parse_result_message(subject, data, {"Nats-Msg-Id": "m1"}, max_bytes=1024)
    assert reason in caught.value.reason


def test_deep_nesting_is_corrupt_not_a_crash() -> None:
    with pytest.raises(CorruptMessage, match="nests too deeply"):
        parse_result_message(SUBJECT, b"[" * 100_000, {"Nats-Msg-Id": "m1"}, max_bytes=1 << 20)


def test_parse_result_message_accepts_a_batch() -> None:
    message = parse_result_message(SUBJECT, encode(body(seqs=(1, 3, 5))), {"Nats-Msg-Id": "m1"}, 1 << 20)
    assert (message.msg_id, message.session_id, message.results) == ("m1", "s1", 3)


class PoisonedStore(ProgressStore):
    """A store that cannot hold one session's results (stands in for data SQLite refuses)."""

    async def apply(self, messages: Sequence[ResultMessage]) -> ApplyStats:
        if any(m.session_id == "poison" for m in messages):
            raise ValueError("cannot store session 'poison'")
        return await super().apply(messages)


async def test_a_message_the_store_refuses_is_parked_and_the_rest_of_its_batch_stored(
    tmp_path: Path, nats_node: NatsNode
) -> None:
    settings = ResultSyncSettings(nats_urls=[nats_node.url], fetch_timeout_s=0.2)
    nc = await nats.connect(nats_node.url)
    try:
        js = nc.jetstream()
        async with PoisonedStore(tmp_path / "p.db") as store, Ingest(settings, store) as ingest:
            await asyncio.wait_for(ingest.ready.wait(), WAIT_S)
            for i, session in enumerate(("s1", "poison", "s2")):
                await js.publish(SUBJECT, encode(body(session=session)), headers={"Nats-Msg-Id": f"m{i}"})

            async def settled() -> bool:
                return ingest.counters.messages == 2 and ingest.counters.deadlettered == 1

            await until(settled)
            assert await store.count("performances") == 4
        sub = await js.pull_subscribe("seminote.deadletter.results", durable=None, stream="SEMINOTE_DEADLETTER",
                                      config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL,
                                                            ack_policy=AckPolicy.NONE))
        parked = await sub.fetch(1, timeout=5)
        assert "store rejected it: ValueError" in (parked[0].headers or {})[DEADLETTER_REASON_HEADER]
    finally:
        await nc.close()
