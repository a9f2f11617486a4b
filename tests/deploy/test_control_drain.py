"""The edge tells the control plane at once when it starts stopping, and the control plane's metrics
show it: a real in-process control plane (gRPC on 127.0.0.1:0) with a long report interval, a real
edge agent on its Connect stream, the Prometheus collector read as a scrape would."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from control_plane.app import ControlPlane
from control_plane.dispatch import RouteQuery
from control_plane.metrics import control_registry
from control_plane.settings import (
    AuthSettings,
    ControlSettings,
    GatewaySettings,
    GrpcSettings,
    RegistrySettings,
)
from edge_node.agent import AgentSession, EdgeAgent, EdgeIdentity, MemoryHost
from edge_node.settings import ControlAgentSettings

TOKEN = "deploy-test-token-0123456789"
REPORT_INTERVAL_S = 30.0  # the scheduled report is far away: anything sooner is the announcement
TELL_TIMEOUT_S = 3.0


@pytest.fixture
async def control(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    settings = ControlSettings(
        state_dir=tmp_path / "cp", grpc=GrpcSettings(port=0, shutdown_grace_s=0.5), gateway=GatewaySettings(enabled=False),
        auth=AuthSettings(enrollment_tokens=[TOKEN], admin_tokens=[TOKEN], client_api_keys=[TOKEN]),
        registry=RegistrySettings(report_interval_s=REPORT_INTERVAL_S, ttl_s=3 * REPORT_INTERVAL_S),
    )
    async with ControlPlane(settings) as cp:
        yield cp


def scrape(cp: ControlPlane) -> dict[str, float]:
    """``{'name{labels}': value}`` from one scrape of the control plane's registry."""
    out = {}
    for line in generate_latest(control_registry(cp)).decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def wait_until(predicate: Callable[[], bool], timeout_s: float) -> float:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout_s, "condition not met in time"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_announced_drain_reaches_routing_before_the_next_report_and_metrics_follow(
    control: ControlPlane,
) -> None:
    host = MemoryHost()
    host.sessions["s-1"] = AgentSession("s-1", user="student", started_at=time.time())
    identity = EdgeIdentity(edge_id="edge-m", region="eu-west", lat=48.85, lon=2.35,
                            whip_url="http://127.0.0.1:1/v1/whip", capacity=8)
    settings = ControlAgentSettings(addr=f"127.0.0.1:{control.port}", enrollment_token=TOKEN)
    async with EdgeAgent(settings, identity, host) as agent:
        await asyncio.wait_for(agent.registered.wait(), TELL_TIMEOUT_S * 5)
        assert control.registry is not None and control.dispatcher is not None
        entry = control.registry.edges["edge-m"]
        before = scrape(control)
        assert before['seminote_control_edges{state="serving"}'] == 1.0
        assert before["seminote_control_capacity_sessions"] == 8.0
        assert before['seminote_control_sessions{state="active"}'] == 1.0

        routed = control.dispatcher.route(RouteQuery(user="u", lat=48.0, lon=2.0))
        assert routed.edge is not None and routed.edge.edge_id == "edge-m"
        after_route = scrape(control)
        assert after_route['seminote_control_routes_total{outcome="routed"}'] == 1.0
        assert after_route['seminote_control_sessions{state="pending"}'] == 1.0

        agent.announce_drain(time.time() + 60)
        took_s = await wait_until(lambda: not entry.load.accepting, TELL_TIMEOUT_S)
        assert took_s < REPORT_INTERVAL_S / 10
        assert not host.accepting  # the edge itself stopped admitting
        assert not entry.routable
        with pytest.raises(Exception, match="capacity|no edge"):
            control.dispatcher.route(RouteQuery(user="u2", lat=48.0, lon=2.0))
        assert scrape(control)['seminote_control_routes_total{outcome="exhausted"}'] == 1.0
