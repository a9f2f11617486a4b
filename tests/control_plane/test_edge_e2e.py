"""End to end with real processes: ``seminote-control serve`` + ``seminote-edge serve`` registered with it;
a client gets its ticket from ``POST /v1/route`` and streams a rendered piece over WebRTC. The control
plane is killed with SIGKILL mid-session and restarted: the edge re-registers with the session within
10 s, and feedback keeps streaming to the client throughout."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from control_plane._proto.seminote.v1 import fleet_pb2, fleet_pb2_grpc
from edge_node.client import FileAudioTrack, PracticeClient
from edge_node.material import midi, render

from .conftest import ADMIN, CLIENT, ENROLL, auth
from .test_failover import free_port, process

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

REREGISTER_WITHIN_S = 10.0
EDGE_ID = "edge-e2e"


async def edge_sessions(fleet: fleet_pb2_grpc.FleetAdminStub) -> list[str] | None:
    """The sessions the control plane sees on the edge, or None while it is not registered."""
    try:
        edge = await fleet.GetEdge(fleet_pb2.GetEdgeRequest(edge_id=EDGE_ID), metadata=auth(ADMIN), timeout=1)
    except grpc.aio.AioRpcError:
        return None
    return list(edge.load.session_ids) if edge.state == 1 else None


async def test_practice_session_routed_by_the_control_plane_survives_its_restart(tmp_path: Path) -> None:
    wav = render.render(midi.melody(np.random.default_rng(3), lo=55, hi=79, n_notes=28, bpm=100).midi)
    grpc_port, gateway_port = free_port(), free_port()
    control_env = {**os.environ, "SEMINOTE_CONTROL_GRPC__PORT": str(grpc_port),
                   "SEMINOTE_CONTROL_GATEWAY__PORT": str(gateway_port),
                   "SEMINOTE_CONTROL_STATE_DIR": str(tmp_path / "cp"), "SEMINOTE_CONTROL_LOG_FORMAT": "json",
                   "SEMINOTE_CONTROL_AUTH__ENROLLMENT_TOKENS": ENROLL, "SEMINOTE_CONTROL_AUTH__ADMIN_TOKENS": ADMIN,
                   "SEMINOTE_CONTROL_AUTH__CLIENT_API_KEYS": CLIENT}
    edge_env = {**os.environ, "SEMINOTE_EDGE_EDGE_ID": EDGE_ID, "SEMINOTE_EDGE_SERVER__PORT": str(free_port()),
                "SEMINOTE_EDGE_SYNC__ENABLED": "false", "SEMINOTE_EDGE_CONTROL__ADDR": f"127.0.0.1:{grpc_port}",
                "SEMINOTE_EDGE_CONTROL__ENROLLMENT_TOKEN": ENROLL, "SEMINOTE_EDGE_CONTROL__REGION": "eu-west",
                "SEMINOTE_EDGE_CONTROL__LAT": "48.86", "SEMINOTE_EDGE_CONTROL__LON": "2.35"}
    control_cmd = (sys.executable, "-m", "control_plane", "serve")
    async with contextlib.AsyncExitStack() as stack:
        channel = await stack.enter_async_context(grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}"))
        fleet = fleet_pb2_grpc.FleetAdminStub(channel)
        first = await stack.enter_async_context(process(*control_cmd, env=control_env, log=tmp_path / "cp.log"))
        await stack.enter_async_context(process(sys.executable, "-m", "edge_node", "serve", "--log-format", "json",
                                                env=edge_env, log=tmp_path / "edge.log"))
        deadline = time.monotonic() + 60
        while await edge_sessions(fleet) is None:
            assert time.monotonic() < deadline, (tmp_path / "edge.log").read_text()[-2000:]
            await asyncio.sleep(0.2)

        async with httpx.AsyncClient() as http:
            r = await http.post(f"http://127.0.0.1:{gateway_port}/v1/route",
                                json={"user": "student", "lat": 48.8, "lon": 2.3, "tempo_bpm": 100},
                                headers={"Authorization": f"Bearer {CLIENT}"})
        assert r.status_code == 200, r.text
        routed = r.json()
        assert routed["edge_id"] == EDGE_ID and routed["mode"] == "light"

        track = FileAudioTrack(wav, tail_s=0.5)
        client = await stack.enter_async_context(PracticeClient(routed["whip_url"], routed["ticket"], track))
        streaming = asyncio.create_task(client.stream(timeout_s=60), name="client-stream")
        await client.wait_for(lambda e: e["type"] == "onset", timeout_s=20)

        first.kill()
        await first.wait()
        killed = time.monotonic()
        events_at_kill = len(client.events)
        await asyncio.sleep(1.0)
        second = await stack.enter_async_context(process(*control_cmd, env=control_env, log=tmp_path / "cp2.log"))
        restarted = time.monotonic()
        while (await edge_sessions(fleet) or []) != [routed["session_id"]]:
            assert second.returncode is None
            assert time.monotonic() - restarted < REREGISTER_WITHIN_S, "edge not back with its session"
            await asyncio.sleep(0.1)
        back_after_s = time.monotonic() - restarted
        events_during_outage = [e for e in client.events if killed <= e.received_at <= killed + 1.0 + back_after_s]
        print(f"edge back with its session {back_after_s:.2f} s after restart; "
              f"{len(events_during_outage)} feedback events arrived while the control plane was away")
        events = await streaming
        assert events_during_outage, "feedback stopped while the control plane was away"
        assert len(events) > events_at_kill
        seqs = [e.event["seq"] for e in events]
        assert seqs == list(range(len(seqs)))  # nothing lost or reordered across the outage
