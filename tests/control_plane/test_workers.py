"""Route workers: separate processes serving Route on grpc.route_port from a replica of the fleet; what
they route counts as pending in the main process and lands in its store."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from control_plane._proto.seminote.v1 import fleet_pb2, fleet_pb2_grpc, router_pb2, router_pb2_grpc
from control_plane.app import ControlPlane
from edge_node.tickets import load_public_key, verify_ticket

from .conftest import ADMIN, CLIENT, auth, control_settings, identity, make_agent, wait_until
from .test_failover import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


async def test_route_workers_route_from_a_replica_and_report_back(tmp_path: Path) -> None:
    settings = control_settings(tmp_path / "cp", report_interval_s=0.5, ttl_s=2.0, sweep_interval_s=0.1)
    settings.routing.workers = 2
    settings.grpc.route_port = free_port()
    async with ControlPlane(settings) as cp:
        assert cp.route_port == settings.grpc.route_port
        async with make_agent(cp.port or 0, identity("edge-paris", capacity=1000)) as a1, \
                make_agent(cp.port or 0, identity("edge-tokyo", lat=35.7, lon=139.7, capacity=1000)) as a2:
            await asyncio.wait_for(asyncio.gather(a1.registered.wait(), a2.registered.wait()), 10)
            request = router_pb2.RouteRequest(user="w", has_location=True, lat=48.8, lon=2.3, tempo_bpm=90)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{cp.route_port}") as channel:
                stub = router_pb2_grpc.RouterStub(channel)
                deadline = time.monotonic() + 10
                while True:  # until the workers' replica has the new edges
                    try:
                        reply = await stub.Route(request, metadata=auth(CLIENT), timeout=2)
                        break
                    except grpc.aio.AioRpcError as exc:
                        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < deadline
                        await asyncio.sleep(0.1)
                assert reply.edge_id == "edge-paris"
                verify_ticket(reply.ticket, [load_public_key(cp.public_key_pem)], "edge-paris", time.time())
                replies = [await stub.Route(request, metadata=auth(CLIENT)) for _ in range(30)]
                assert {r.edge_id for r in replies} == {"edge-paris"}
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.Route(request)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            registry = cp.registry
            assert registry is not None
            # Each worker's routes arrive in the main process as pending sessions and routed records.
            await wait_until(lambda: len(registry.edges["edge-paris"].pending) == 31, timeout_s=5)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{cp.port}") as admin:
                fleet = fleet_pb2_grpc.FleetAdminStub(admin)
                listed = await fleet.ListSessions(fleet_pb2.ListSessionsRequest(state="routed"), metadata=auth(ADMIN))
                assert {s.session_id for s in listed.sessions} >= {r.session_id for r in replies}
                stats = await fleet.GetStats(fleet_pb2.GetStatsRequest(), metadata=auth(ADMIN))
                assert stats.routes_total >= 31
        workers = cp.workers
    assert workers is not None and all(not p.is_alive() for p in workers._procs)


async def test_workers_replicas_stay_fresh_when_the_default_executor_is_busy(tmp_path: Path) -> None:
    """Pipe I/O to the workers has threads of its own: with the loop's default executor down to one
    (busy) thread, the snapshot feed still reaches them and they keep routing past the TTL."""
    from concurrent.futures import ThreadPoolExecutor

    loop = asyncio.get_running_loop()
    tiny = ThreadPoolExecutor(max_workers=1)
    loop.set_default_executor(tiny)
    settings = control_settings(tmp_path / "cp", report_interval_s=0.5, ttl_s=1.5, sweep_interval_s=0.1)
    settings.routing.workers = 2
    settings.grpc.route_port = free_port()
    async with ControlPlane(settings) as cp, make_agent(cp.port or 0, identity("edge-paris", capacity=100_000)) as a:
        await asyncio.wait_for(a.registered.wait(), 10)
        request = router_pb2.RouteRequest(user="w", has_location=True, lat=48.8, lon=2.3, tempo_bpm=90)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{cp.route_port}") as channel:
            stub = router_pb2_grpc.RouterStub(channel)
            started = time.monotonic()
            exhausted = 0
            while time.monotonic() - started < 4 * settings.registry.ttl_s:  # well past the TTL
                try:
                    reply = await stub.Route(request, metadata=auth(CLIENT), timeout=2)
                    assert reply.edge_id == "edge-paris"
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    exhausted += 1
                    assert time.monotonic() - started < 3, "replicas went stale"  # only before the edge arrives
                await asyncio.sleep(0.02)
    tiny.shutdown(wait=False)
