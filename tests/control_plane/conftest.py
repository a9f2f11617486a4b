"""Fixtures: a real control plane (grpc.aio on 127.0.0.1:0, gateway on a free port, SQLite in tmp)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest

from control_plane.app import ControlPlane
from control_plane.settings import (
    AuthSettings,
    ControlSettings,
    GatewaySettings,
    GrpcSettings,
    RegistrySettings,
)
from edge_node.agent import EdgeAgent, EdgeIdentity, MemoryHost
from edge_node.settings import ControlAgentSettings

ENROLL = "enroll-token-0123456789"
ADMIN = "admin-token-0123456789ab"
CLIENT = "client-key-0123456789abc"


def control_settings(state_dir: Path, **registry: float) -> ControlSettings:
    return ControlSettings(
        state_dir=state_dir,
        grpc=GrpcSettings(port=0, shutdown_grace_s=0.5),
        gateway=GatewaySettings(port=0),
        auth=AuthSettings(enrollment_tokens=[ENROLL], admin_tokens=[ADMIN], client_api_keys=[CLIENT]),
        registry=RegistrySettings(**registry),  # type: ignore[arg-type]
    )


@pytest.fixture
async def control(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    cp = ControlPlane(control_settings(tmp_path / "cp", report_interval_s=0.5, ttl_s=2.0, sweep_interval_s=0.1))
    async with cp:
        yield cp


def agent_settings(port: int, **kw: object) -> ControlAgentSettings:
    return ControlAgentSettings(addr=f"127.0.0.1:{port}", enrollment_token=ENROLL, backoff_initial_s=0.05,
                                backoff_max_s=0.5, **kw)  # type: ignore[arg-type]


def identity(edge_id: str, region: str = "eu-west", lat: float = 48.85, lon: float = 2.35, capacity: int = 10,
             detailed: bool = True) -> EdgeIdentity:
    return EdgeIdentity(edge_id=edge_id, region=region, lat=lat, lon=lon,
                        whip_url=f"http://127.0.0.1:1/{edge_id}/v1/whip", capacity=capacity,
                        detailed_mode=detailed, model_loaded=detailed)


def make_agent(port: int, ident: EdgeIdentity, host: MemoryHost | None = None) -> EdgeAgent:
    return EdgeAgent(agent_settings(port), ident, host or MemoryHost())


@pytest.fixture
async def admin_channel(control: ControlPlane) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{control.port}") as channel:
        yield channel


def auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0, step_s: float = 0.02) -> float:
    """Polls ``predicate`` until true; returns the seconds it took. Fails the test after ``timeout_s``."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(step_s)
