"""Authentication, probes, reflection and hostile input against a real grpc.aio server."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from control_plane._proto.seminote.v1 import (
    edge_pb2,
    fleet_pb2,
    fleet_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    router_pb2,
    router_pb2_grpc,
)
from control_plane.app import ControlPlane
from edge_node.errors import TicketExpired, TicketForged
from edge_node.tickets import load_public_key, verify_ticket

from .conftest import ADMIN, CLIENT, ENROLL, auth, identity, make_agent, wait_until

ROUTE = router_pb2.RouteRequest(user="u", has_location=True, lat=48.0, lon=2.0, tempo_bpm=90)


async def _code(awaitable) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await awaitable
    return err.value.code()


async def test_calls_without_valid_credentials_are_unauthenticated(
    control: ControlPlane, admin_channel: grpc.aio.Channel
) -> None:
    router = router_pb2_grpc.RouterStub(admin_channel)
    fleet = fleet_pb2_grpc.FleetAdminStub(admin_channel)
    assert await _code(router.Route(ROUTE)) == grpc.StatusCode.UNAUTHENTICATED
    assert await _code(router.Route(ROUTE, metadata=auth("not-a-token"))) == grpc.StatusCode.UNAUTHENTICATED
    assert await _code(router.Route(ROUTE, metadata=(("authorization", "Basic x"),))) == grpc.StatusCode.UNAUTHENTICATED
    assert await _code(fleet.ListEdges(fleet_pb2.ListEdgesRequest())) == grpc.StatusCode.UNAUTHENTICATED
    # Valid credentials of the wrong kind.
    assert await _code(fleet.ListEdges(fleet_pb2.ListEdgesRequest(), metadata=auth(CLIENT))) == \
        grpc.StatusCode.PERMISSION_DENIED
    assert await _code(router.Route(ROUTE, metadata=auth(ENROLL))) == grpc.StatusCode.PERMISSION_DENIED
    registry = registry_pb2_grpc.EdgeRegistryStub(admin_channel)
    call = registry.Connect(metadata=auth(ADMIN))
    assert await _code(call.read()) == grpc.StatusCode.PERMISSION_DENIED
    call = registry.Connect()
    assert await _code(call.read()) == grpc.StatusCode.UNAUTHENTICATED


async def test_health_probe_is_open_and_reflection_lists_services(
    control: ControlPlane, admin_channel: grpc.aio.Channel
) -> None:
    health = health_pb2_grpc.HealthStub(admin_channel)
    for service in ("", "seminote.v1.Router", "seminote.v1.EdgeRegistry", "seminote.v1.FleetAdmin"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

    def list_services() -> tuple[list[str], list[str]]:
        with grpc.insecure_channel(f"127.0.0.1:{control.port}") as channel:
            db = ProtoReflectionDescriptorDatabase(channel)
            services = db.get_services()
            pool = DescriptorPool(db)  # descriptors fetched through reflection
            route = pool.FindServiceByName("seminote.v1.Router")
            return list(services), [m.name for m in route.methods]

    services, methods = await asyncio.to_thread(list_services)
    assert {"seminote.v1.Router", "seminote.v1.EdgeRegistry", "seminote.v1.FleetAdmin",
            "grpc.health.v1.Health"} <= set(services)
    assert methods == ["Route"]


async def test_garbage_protobuf_bytes_get_invalid_argument_and_the_server_keeps_serving(
    control: ControlPlane, admin_channel: grpc.aio.Channel
) -> None:
    raw_route = admin_channel.unary_unary("/seminote.v1.Router/Route")
    for garbage in (b"\xff\xff\xff\xff", b"\x0a\x80\x80\x80\x80\x80", b"\x12" + b"\x05abc"):
        assert await _code(raw_route(garbage, metadata=auth(CLIENT))) == grpc.StatusCode.INVALID_ARGUMENT
    raw_connect = admin_channel.stream_stream("/seminote.v1.EdgeRegistry/Connect")
    call = raw_connect(metadata=auth(ENROLL))
    await call.write(b"\xff\xfe\xfd")
    assert await _code(call.read()) == grpc.StatusCode.INVALID_ARGUMENT
    # A Connect whose first message is a load report, not Register.
    registry = registry_pb2_grpc.EdgeRegistryStub(admin_channel)
    call = registry.Connect(metadata=auth(ENROLL))
    await call.write(registry_pb2.EdgeMessage(load=registry_pb2.LoadReport()))
    assert await _code(call.read()) == grpc.StatusCode.INVALID_ARGUMENT
    # Still serving.
    async with make_agent(control.port or 0, identity("edge-ok")) as agent:
        await asyncio.wait_for(agent.registered.wait(), 5)
        reply = await router_pb2_grpc.RouterStub(admin_channel).Route(ROUTE, metadata=auth(CLIENT))
        assert reply.edge_id == "edge-ok"


async def test_out_of_range_and_missing_fields_are_invalid_argument(
    control: ControlPlane, admin_channel: grpc.aio.Channel
) -> None:
    router = router_pb2_grpc.RouterStub(admin_channel)
    bad_routes = [
        router_pb2.RouteRequest(user="u", has_location=True, lat=91, lon=0),
        router_pb2.RouteRequest(user="u", has_location=True, lat=0, lon=-180.5),
        router_pb2.RouteRequest(user="u", has_location=True, lat=float("nan"), lon=0),
        router_pb2.RouteRequest(user="", has_location=True, lat=0, lon=0),
        router_pb2.RouteRequest(user="u"),  # no location at all
        router_pb2.RouteRequest(user="u", region="atlantis"),
        router_pb2.RouteRequest(user="u", has_location=True, lat=0, lon=0, tempo_bpm=-5),
        router_pb2.RouteRequest(user="u" * 300, has_location=True, lat=0, lon=0),
    ]
    for request in bad_routes:
        assert await _code(router.Route(request, metadata=auth(CLIENT))) == grpc.StatusCode.INVALID_ARGUMENT
    registry = registry_pb2_grpc.EdgeRegistryStub(admin_channel)
    for reg in (
        registry_pb2.Register(edge_id="x", region="r", lat=200, lon=0, whip_url="http://a/w", capacity=1,
                              instance_id="i"),
        registry_pb2.Register(edge_id="bad id!", region="r", whip_url="http://a/w", capacity=1, instance_id="i"),
        registry_pb2.Register(edge_id="x", region="r", whip_url="ftp://a/w", capacity=1, instance_id="i"),
        registry_pb2.Register(edge_id="x", region="r", whip_url="http://a/w", capacity=0, instance_id="i"),
    ):
        call = registry.Connect(metadata=auth(ENROLL))
        await call.write(registry_pb2.EdgeMessage(register=reg))
        assert await _code(call.read()) == grpc.StatusCode.INVALID_ARGUMENT
    assert control.registry is not None and not control.registry.edges


async def test_unknown_edges_are_not_found(control: ControlPlane, admin_channel: grpc.aio.Channel) -> None:
    fleet = fleet_pb2_grpc.FleetAdminStub(admin_channel)
    md = auth(ADMIN)
    assert await _code(fleet.GetEdge(fleet_pb2.GetEdgeRequest(edge_id="nope"), metadata=md)) == grpc.StatusCode.NOT_FOUND
    assert await _code(fleet.CordonEdge(fleet_pb2.EdgeRequest(edge_id="nope"), metadata=md)) == grpc.StatusCode.NOT_FOUND
    assert await _code(fleet.DrainEdge(fleet_pb2.DrainEdgeRequest(edge_id="nope"), metadata=md)) == \
        grpc.StatusCode.NOT_FOUND
    assert await _code(fleet.ListSessions(fleet_pb2.ListSessionsRequest(edge_id="nope"), metadata=md)) == \
        grpc.StatusCode.NOT_FOUND
    assert await _code(fleet.ListSessions(fleet_pb2.ListSessionsRequest(state="bogus"), metadata=md)) == \
        grpc.StatusCode.INVALID_ARGUMENT


async def test_duplicate_registration_of_a_live_edge_id_is_refused(
    control: ControlPlane, admin_channel: grpc.aio.Channel
) -> None:
    async with make_agent(control.port or 0, identity("edge-dup")) as first:
        await asyncio.wait_for(first.registered.wait(), 5)
        async with make_agent(control.port or 0, identity("edge-dup", lat=10.0)) as second:
            await wait_until(lambda: "ALREADY_EXISTS" in second.status.last_error)
            assert not second.registered.is_set()
            assert first.registered.is_set()
            assert control.registry is not None
            assert control.registry.edges["edge-dup"].instance_id == first.instance_id
            assert control.registry.edges["edge-dup"].lat == pytest.approx(48.85)


async def test_tickets_bind_their_edge_and_expire_and_forgeries_fail(
    control: ControlPlane, admin_channel: grpc.aio.Channel
) -> None:
    async with make_agent(control.port or 0, identity("edge-t")) as agent:
        await asyncio.wait_for(agent.registered.wait(), 5)
        reply = await router_pb2_grpc.RouterStub(admin_channel).Route(ROUTE, metadata=auth(CLIENT))
    key = load_public_key(control.public_key_pem)
    assert reply.mode == edge_pb2.MODE_LIGHT
    verify_ticket(reply.ticket, [key], "edge-t", time.time())
    head, claims, sig = reply.ticket.split(".")
    forged = f"{head}.{claims}.{sig[:-4]}AAAA"
    with pytest.raises(TicketForged):
        verify_ticket(forged, [key], "edge-t", time.time())
    with pytest.raises(TicketExpired):
        verify_ticket(reply.ticket, [key], "edge-t", reply.expires_at + 1)


async def test_a_flooding_edge_is_throttled_and_others_keep_being_served(
    control: ControlPlane, admin_channel: grpc.aio.Channel
) -> None:
    registry = registry_pb2_grpc.EdgeRegistryStub(admin_channel)
    call = registry.Connect(metadata=auth(ENROLL))
    await call.write(registry_pb2.EdgeMessage(register=registry_pb2.Register(
        edge_id="edge-flood", region="eu-west", lat=48.0, lon=2.0, whip_url="http://a/v1/whip", capacity=5,
        instance_id="flood")))
    first = await call.read()
    assert first.WhichOneof("body") == "registered"
    applied_before = control.registry.edges["edge-flood"].last_report_mono  # type: ignore[union-attr]
    started = time.monotonic()
    for i in range(2000):
        await call.write(registry_pb2.EdgeMessage(load=registry_pb2.LoadReport(
            load=edge_pb2.Load(session_ids=[f"s{i}"], accepting=True))))
    elapsed = time.monotonic() - started
    await asyncio.sleep(0.3)
    entry = control.registry.edges["edge-flood"]  # type: ignore[union-attr]
    assert entry.last_report_mono > applied_before and entry.state.value == "serving"
    # At most one report per MIN_REPORT_SPACING_S was applied: the last one seen may lag the flood.
    assert len(entry.sessions) == 1
    async with make_agent(control.port or 0, identity("edge-calm", lat=10.0)) as agent:
        await asyncio.wait_for(agent.registered.wait(), 5)
    reply = await router_pb2_grpc.RouterStub(admin_channel).Route(ROUTE, metadata=auth(CLIENT))
    assert reply.edge_id == "edge-flood" and elapsed < 30
    await call.done_writing()
