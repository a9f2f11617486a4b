"""The browser practice page gets its ticket from the control plane's route gateway (``?route=...``), then
streams its (fake) microphone to the routed edge: control plane and edge are real processes, the page
runs in a real headless Chromium."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile as sf

from control_plane._proto.seminote.v1 import fleet_pb2, fleet_pb2_grpc
from edge_node.material import midi, render

from .conftest import ADMIN, CLIENT, ENROLL, auth
from .test_failover import free_port

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium is not installed (scripts/setup.sh installs it)"),
]


@contextlib.contextmanager
def spawn(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for_edge(channel: grpc.Channel, edge_id: str, timeout_s: float) -> None:
    fleet = fleet_pb2_grpc.FleetAdminStub(channel)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(grpc.RpcError):
            edge = fleet.GetEdge(fleet_pb2.GetEdgeRequest(edge_id=edge_id), metadata=auth(ADMIN), timeout=1)
            if edge.state == 1:
                return
        time.sleep(0.2)
    raise AssertionError(f"edge {edge_id} did not register")


def test_practice_page_gets_its_ticket_through_the_route_gateway(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    piece = midi.melody(np.random.default_rng(9), lo=55, hi=79, n_notes=8, bpm=110)
    audio = np.concatenate([np.zeros(48000, np.float32), render.load(render.render(piece.midi))])
    wav = tmp_path / "piece.wav"
    sf.write(wav, audio, 48000, subtype="PCM_16")
    grpc_port, gateway_port, edge_port = free_port(), free_port(), free_port()
    control_env = {**os.environ, "SEMINOTE_CONTROL_GRPC__PORT": str(grpc_port),
                   "SEMINOTE_CONTROL_GATEWAY__PORT": str(gateway_port),
                   "SEMINOTE_CONTROL_STATE_DIR": str(tmp_path / "cp"), "SEMINOTE_CONTROL_LOG_FORMAT": "json",
                   "SEMINOTE_CONTROL_AUTH__ENROLLMENT_TOKENS": ENROLL, "SEMINOTE_CONTROL_AUTH__ADMIN_TOKENS": ADMIN,
                   "SEMINOTE_CONTROL_AUTH__CLIENT_API_KEYS": CLIENT}
    edge_env = {**os.environ, "SEMINOTE_EDGE_EDGE_ID": "edge-page", "SEMINOTE_EDGE_SYNC__ENABLED": "false",
                "SEMINOTE_EDGE_CONTROL__ADDR": f"127.0.0.1:{grpc_port}",
                "SEMINOTE_EDGE_CONTROL__ENROLLMENT_TOKEN": ENROLL}
    with spawn([sys.executable, "-m", "control_plane", "serve"], control_env, tmp_path / "cp.log"), \
            spawn([sys.executable, "-m", "edge_node", "serve", "--port", str(edge_port), "--log-format", "json"],
                  edge_env, tmp_path / "edge.log"), \
            grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        wait_for_edge(channel, "edge-page", 60)
        page_url = (f"http://127.0.0.1:{edge_port}/?autostart=1&region=local&user=pianist"
                    f"&route=http://127.0.0.1:{gateway_port}/v1/route&key={CLIENT}")
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={wav}",
                "--disable-background-networking", "--no-first-run"]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
            try:
                page = browser.new_page()
                page.goto(page_url)
                page.wait_for_function("window.seminote && (window.seminote.state === 'live' || window.seminote.error)",
                                       timeout=30_000)
                assert page.evaluate("window.seminote.error") is None
                page.wait_for_function("window.seminote.events.some(r => r.event.type === 'onset')", timeout=30_000)
                ticket = page.evaluate("window.seminote.ticket")
                page.evaluate("window.seminote.stop()")
            finally:
                browser.close()
        claims = json.loads(_b64(ticket.split(".")[1]))
        assert claims["edge"] == "edge-page" and claims["sub"] == "pianist"
        sessions = fleet_pb2_grpc.FleetAdminStub(channel).ListSessions(
            fleet_pb2.ListSessionsRequest(edge_id="edge-page", state=""), metadata=auth(ADMIN), timeout=5)
        routed = {s.session_id: s for s in sessions.sessions}
        assert claims["sid"] in routed and routed[claims["sid"]].user == "pianist"


def _b64(part: str) -> bytes:
    import base64
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


