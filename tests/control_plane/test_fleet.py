"""Acceptance: 200 real edge agents over 5 regions, real gRPC streams, one real control plane.

Routes go to the nearest region with capacity; never to a cordoned, draining, stale or full edge; a
burst of 2,000 routes spreads so that the busiest edge gets < 1.5x the mean.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
import pytest

from control_plane._proto.seminote.v1 import router_pb2, router_pb2_grpc
from control_plane.app import ControlPlane
from edge_node.agent import AgentSession, EdgeAgent, MemoryHost

from .conftest import CLIENT, auth, control_settings, identity, make_agent, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

# Five regions far enough apart (> tier slack) and near enough (< light budget) to fall over to each other.
REGIONS = {
    "eu-west": (48.86, 2.35),      # Paris
    "eu-central": (50.11, 8.68),   # Frankfurt, nearest to Paris
    "eu-south": (40.42, -3.70),    # Madrid
    "eu-north": (59.33, 18.07),    # Stockholm
    "eu-east": (52.23, 21.01),     # Warsaw
}
EDGES_PER_REGION = 40
CAPACITY = 100
JITTER_DEG = 0.1
BURST_ROUTES = 2000
BURST_CONCURRENCY = 50


class Fleet:
    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.agents: dict[str, EdgeAgent] = {}
        self.hosts: dict[str, MemoryHost] = {}
        self.region_of: dict[str, str] = {}


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    settings = control_settings(tmp_path / "cp", report_interval_s=1.0, ttl_s=3.0, sweep_interval_s=0.2,
                                pending_ttl_s=120.0)
    rng = random.Random(42)
    async with ControlPlane(settings) as cp, AsyncExitStack() as stack:
        f = Fleet(cp)
        for region, (lat, lon) in REGIONS.items():
            for i in range(EDGES_PER_REGION):
                edge_id = f"{region}-{i:02d}"
                host = MemoryHost()
                ident = identity(edge_id, region=region, lat=lat + rng.uniform(-JITTER_DEG, JITTER_DEG),
                                 lon=lon + rng.uniform(-JITTER_DEG, JITTER_DEG), capacity=CAPACITY,
                                 detailed=i % 2 == 0)
                f.agents[edge_id] = await stack.enter_async_context(make_agent(cp.port or 0, ident, host))
                f.hosts[edge_id] = host
                f.region_of[edge_id] = region
        await wait_until(lambda: all(a.registered.is_set() for a in f.agents.values()), timeout_s=60)
        yield f


async def route(stub: router_pb2_grpc.RouterStub, region: str, tempo: float = 90.0,
                rng: random.Random | None = None) -> router_pb2.RouteResponse:
    lat, lon = REGIONS[region]
    if rng is not None:
        lat, lon = lat + rng.uniform(-0.3, 0.3), lon + rng.uniform(-0.3, 0.3)
    request = router_pb2.RouteRequest(user="u", has_location=True, lat=lat, lon=lon, tempo_bpm=tempo)
    return await stub.Route(request, metadata=auth(CLIENT))


async def test_fleet_of_200_routes_nearest_never_to_excluded_edges_and_balances_a_burst(fleet: Fleet) -> None:
    cp, registry = fleet.cp, fleet.cp.registry
    assert registry is not None and len(registry.edges) == 200
    rng = random.Random(7)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{cp.port}") as channel:
        stub = router_pb2_grpc.RouterStub(channel)

        # 1. Each region's clients land in their own region; slow tempo lands on model-ready edges.
        for region in REGIONS:
            for tempo in (90.0, 45.0):
                for _ in range(10):
                    reply = await route(stub, region, tempo, rng)
                    assert fleet.region_of[reply.edge_id] == region
                    if tempo == 45.0:
                        assert reply.mode == 2 and registry.edges[reply.edge_id].model_loaded

        # 2. Exclude edges in every way the policy knows: cordoned, draining, stale, full.
        admin = fleet.cp
        assert admin.registry is not None
        excluded: dict[str, str] = {}
        for region in REGIONS:
            ids = [e for e in fleet.agents if fleet.region_of[e] == region]
            cordon, drain, stale, full = ids[0:3], ids[3:6], ids[6:9], ids[9:12]
            for e in cordon:
                await admin.registry.cordon(e, None)
                excluded[e] = "cordoned"
            for e in drain:
                fleet.hosts[e].sessions["keep"] = AgentSession("keep")  # so the drain stays in progress
            for e in stale:
                fleet.agents[e].status.report_interval_s = 3600.0  # stream stays open, reports stop
                excluded[e] = "stale"
            for e in full:
                fleet.hosts[e].sessions.update({f"{e}-s{k}": AgentSession(f"{e}-s{k}") for k in range(CAPACITY)})
                excluded[e] = "full"
        await wait_until(lambda: all(len(registry.edges[e].sessions) == 1 for r in REGIONS
                                     for e in [x for x in fleet.agents if fleet.region_of[x] == r][3:6]), 10)
        for region in REGIONS:
            ids = [e for e in fleet.agents if fleet.region_of[e] == region]
            for e in ids[3:6]:
                await admin.registry.drain(e, 1e12, None)
                excluded[e] = "draining"
        await wait_until(lambda: all(registry.edges[e].state.value == "stale"
                                     for e, why in excluded.items() if why == "stale"), timeout_s=10)
        await wait_until(lambda: all(registry.edges[e].in_use >= CAPACITY
                                     for e, why in excluded.items() if why == "full"), timeout_s=10)

        # 3. A burst of 2,000 routes from one region's clients: never an excluded edge, never another
        #    region while this one has capacity, and spread evenly over the region's routable edges.
        counts: Counter[str] = Counter()
        sem = asyncio.Semaphore(BURST_CONCURRENCY)

        async def one() -> None:
            async with sem:
                reply = await route(stub, "eu-west", 90.0, rng)
            counts[reply.edge_id] += 1

        await asyncio.gather(*(one() for _ in range(BURST_ROUTES)))
        assert sum(counts.values()) == BURST_ROUTES
        assert not set(counts) & set(excluded), {e: excluded[e] for e in set(counts) & set(excluded)}
        assert {fleet.region_of[e] for e in counts} == {"eu-west"}
        routable = [e for e in fleet.agents if fleet.region_of[e] == "eu-west" and e not in excluded]
        mean = BURST_ROUTES / len(routable)
        busiest = max(counts.values())
        assert set(counts) == set(routable)
        print(f"burst of {BURST_ROUTES}: {len(routable)} edges, busiest {busiest}, mean {mean:.1f}, "
              f"ratio {busiest / mean:.2f}")
        assert busiest < 1.5 * mean, (busiest, mean)

        # 4. Fill eu-west completely: its clients fall over to the nearest region with capacity.
        for e in routable:
            fleet.hosts[e].sessions.update({f"{e}-f{k}": AgentSession(f"{e}-f{k}") for k in range(CAPACITY)})
        await wait_until(lambda: all(registry.edges[e].in_use >= CAPACITY for e in routable), timeout_s=10)
        for _ in range(50):
            reply = await route(stub, "eu-west", 90.0, rng)
            assert fleet.region_of[reply.edge_id] == "eu-central"
            assert reply.edge_id not in excluded
