"""The registry alone (real SQLite store, no gRPC): pending routes expire, edges go stale at the TTL."""

from __future__ import annotations

import asyncio
from pathlib import Path

from control_plane.registry import EdgeStream, LoadSnapshot, Registration, Registry, unit_vector
from control_plane.settings import RegistrySettings
from control_plane.store import Store


def registration(edge_id: str, capacity: int = 2) -> Registration:
    return Registration(edge_id, "eu-west", 48.0, 2.0, "http://h/v1/whip", capacity, True, True, (), "inst", "v",
                        False, ())


async def test_routed_sessions_count_against_capacity_until_they_connect_or_expire(tmp_path: Path) -> None:
    settings = RegistrySettings(pending_ttl_s=0.2, ttl_s=60)
    async with Store(tmp_path / "c.db") as store, Registry(settings, store) as registry:
        stream = EdgeStream("inst")
        await registry.register(registration("e1"), stream)
        vec = unit_vector(48.0, 2.0)
        assert len(registry.candidates(vec, {}, 1)) == 1
        registry.note_routed("e1", "s-a")
        store.session_changed("s-a", edge_id="e1", state="routed", routed_at=1.0)
        registry.note_routed("e1", "s-b")
        store.session_changed("s-b", edge_id="e1", state="routed", routed_at=1.0)
        assert len(registry.candidates(vec, {}, 1)) == 0  # full: two routed, capacity two
        registry.report("e1", stream, LoadSnapshot(sessions_light=1, session_ids=("s-a",)))
        assert registry.edges["e1"].pending.keys() == {"s-b"}
        await asyncio.sleep(0.3)
        await registry.sweep()
        assert not registry.edges["e1"].pending
        assert len(registry.candidates(vec, {}, 1)) == 1  # s-a connected, s-b never came
        states = {r["session_id"]: r["state"] for r in await store.list_sessions("e1", ("active", "expired"))}
        assert states == {"s-a": "active", "s-b": "expired"}


async def test_a_silent_edge_is_unroutable_at_the_ttl_even_before_the_sweep(tmp_path: Path) -> None:
    settings = RegistrySettings(ttl_s=0.2, sweep_interval_s=60)
    async with Store(tmp_path / "c.db") as store, Registry(settings, store) as registry:
        await registry.register(registration("e1"), EdgeStream("inst"))
        vec = unit_vector(48.0, 2.0)
        assert len(registry.candidates(vec, {}, 1)) == 1
        await asyncio.sleep(0.3)
        assert registry.edges["e1"].state.value == "serving"  # the sweeper has not run
        assert len(registry.candidates(vec, {}, 1)) == 0
        await registry.sweep()
        assert registry.edges["e1"].state.value == "stale"
