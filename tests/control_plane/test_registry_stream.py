"""Edge agents over real gRPC streams: register, report, take commands, get routed."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from control_plane._proto.seminote.v1 import edge_pb2, fleet_pb2, fleet_pb2_grpc, router_pb2, router_pb2_grpc
from control_plane.app import ControlPlane
from edge_node.agent import AgentSession, MemoryHost
from edge_node.tickets import load_public_key, verify_ticket

from .conftest import ADMIN, CLIENT, auth, identity, make_agent, wait_until


async def test_agent_registers_receives_key_and_routes_get_valid_tickets(
    control: ControlPlane, admin_channel: grpc.aio.Channel
) -> None:
    host = MemoryHost()
    host.sessions["s-old"] = AgentSession("s-old", user="u0", mode="light")
    async with make_agent(control.port or 0, identity("edge-a"), host) as agent:
        await asyncio.wait_for(agent.registered.wait(), 5)
        assert agent.status.public_key_pem == control.public_key_pem
        assert agent.status.report_interval_s == 0.5
        fleet = fleet_pb2_grpc.FleetAdminStub(admin_channel)
        edge = await fleet.GetEdge(fleet_pb2.GetEdgeRequest(edge_id="edge-a"), metadata=auth(ADMIN))
        assert edge.state == edge_pb2.EDGE_STATE_SERVING
        assert list(edge.load.session_ids) == ["s-old"]

        router = router_pb2_grpc.RouterStub(admin_channel)
        reply = await router.Route(router_pb2.RouteRequest(user="alice", has_location=True, lat=48.0, lon=2.0,
                                                           tempo_bpm=80, piece="bach-minuet"),
                                   metadata=auth(CLIENT))
        assert reply.edge_id == "edge-a" and reply.mode == edge_pb2.MODE_LIGHT
        claims = verify_ticket(reply.ticket, [load_public_key(agent.status.public_key_pem)], "edge-a", time.time())
        assert claims.user == "alice" and claims.session_id == reply.session_id and claims.piece == "bach-minuet"
        edge = await fleet.GetEdge(fleet_pb2.GetEdgeRequest(edge_id="edge-a"), metadata=auth(ADMIN))
        assert edge.pending_sessions == 1

        # The session connects: the next report moves it from pending to active.
        host.sessions[reply.session_id] = AgentSession(reply.session_id, user="alice")
        await wait_until(lambda: control.registry is not None
                       and reply.session_id in control.registry.edges["edge-a"].sessions)
        assert not control.registry.edges["edge-a"].pending  # type: ignore[union-attr]
        listed = await fleet.ListSessions(fleet_pb2.ListSessionsRequest(edge_id="edge-a"), metadata=auth(ADMIN))
        states = {s.session_id: s.state for s in listed.sessions}
        assert states == {"s-old": "active", reply.session_id: "active"}


async def test_cordon_uncordon_and_drain_reach_the_edge(control: ControlPlane, admin_channel: grpc.aio.Channel) -> None:
    host = MemoryHost()
    host.sessions["s1"] = AgentSession("s1")
    fleet = fleet_pb2_grpc.FleetAdminStub(admin_channel)
    router = router_pb2_grpc.RouterStub(admin_channel)
    request = router_pb2.RouteRequest(user="bob", has_location=True, lat=48.0, lon=2.0, tempo_bpm=90)
    async with make_agent(control.port or 0, identity("edge-c"), host) as agent:
        await asyncio.wait_for(agent.registered.wait(), 5)
        edge = await fleet.CordonEdge(fleet_pb2.EdgeRequest(edge_id="edge-c"), metadata=auth(ADMIN))
        assert edge.state == edge_pb2.EDGE_STATE_CORDONED
        await wait_until(lambda: not host.accepting)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await router.Route(request, metadata=auth(CLIENT))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        await fleet.UncordonEdge(fleet_pb2.EdgeRequest(edge_id="edge-c"), metadata=auth(ADMIN))
        await wait_until(lambda: host.accepting)
        assert (await router.Route(request, metadata=auth(CLIENT))).edge_id == "edge-c"

        edge = await fleet.DrainEdge(fleet_pb2.DrainEdgeRequest(edge_id="edge-c", timeout_s=30), metadata=auth(ADMIN))
        assert edge.state == edge_pb2.EDGE_STATE_DRAINING
        await wait_until(lambda: host.drain_deadline is not None)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await fleet.UncordonEdge(fleet_pb2.EdgeRequest(edge_id="edge-c"), metadata=auth(ADMIN))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        host.sessions.clear()  # the last session ends
        await wait_until(lambda: control.registry is not None
                       and control.registry.edges["edge-c"].state.value == "drained")
        assert agent.status.commands[:3] == ["cordon", "uncordon", "drain"]
