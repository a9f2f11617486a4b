"""All cores: ``seminote-edge serve`` with two worker processes behind one port, as a real daemon with
real WebRTC clients: sessions are spread over the workers and get feedback, the edge's total limit
and the single-use ticket guard hold across workers, ``DELETE`` reaches the session's own worker,
``/metrics`` sums the workers, the control plane sees one edge with its whole capacity and every
session, SIGTERM exits 0, and a worker whose loop stops answering is killed while the others serve on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from control_plane.app import ControlPlane
from control_plane.settings import (
    AuthSettings,
    ControlSettings,
    GatewaySettings,
    GrpcSettings,
    RegistrySettings,
)
from edge_node.client import FileAudioTrack, PracticeClient
from edge_node.errors import WhipRefused
from edge_node.material import midi, render
from edge_node.tickets import TicketClaims, generate_keypair, mint_ticket, private_key_pem
from edge_node.workers import WORKER_STUCK_S

from .conftest import START_TIMEOUT_S, Daemon, spawn

EDGE_ID = "edge-workers"
TOKEN = "deploy-test-token-0123456789"
EVENT_TIMEOUT_S = 60.0
EXIT_TIMEOUT_S = 60.0

pytestmark = pytest.mark.timeout(300)


def piece_wav() -> Path:
    piece = midi.melody(np.random.default_rng(11), lo=55, hi=79, n_notes=6, bpm=120.0)
    return render.render(piece.midi, render.RenderOptions(tail_s=0.3))


def ticket(key: object, i: int) -> str:
    now = time.time()
    claims = TicketClaims(session_id=f"w-{i}-{time.monotonic_ns()}", user=f"student-{i}", edge_id=EDGE_ID,
                          iat=now, exp=now + 300)
    return mint_ticket(key, claims)  # type: ignore[arg-type]


async def edge_url(d: Daemon) -> str:
    await asyncio.to_thread(d.wait_for, "READY=1", START_TIMEOUT_S)
    for line in d.log_lines():
        if line.get("event") == "edge listening":
            return str(line["url"]).rstrip("/")
    raise AssertionError(d.log_tail())


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.text()


def sample(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} ([0-9.e+\-]+)$", text, re.M)
    assert m, f"{name} not in metrics"
    return float(m.group(1))


async def wait_metric(url: str, name: str, value: float, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        _, text = await get(url + "/metrics")
        if sample(text, name) == value:
            return
        assert time.monotonic() < deadline, f"{name} is {sample(text, name)}, not {value}"
        await asyncio.sleep(0.2)


def edge_env(tmp_path: Path, key: object, **extra: str) -> dict[str, str]:
    (tmp_path / "ticket.pem").write_text(private_key_pem(key))  # type: ignore[arg-type]
    return {"SEMINOTE_EDGE_EDGE_ID": EDGE_ID, "SEMINOTE_EDGE_SERVER__TICKET_PRIVATE_KEY": str(tmp_path / "ticket.pem"),
            "SEMINOTE_EDGE_SERVER__WORKERS": "2", "SEMINOTE_EDGE_SERVICE__DRAIN_TIMEOUT_S": "30", **extra}


async def test_two_workers_behind_one_port_share_sessions_limits_and_metrics(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    key = generate_keypair()[0]
    edge = spawn(daemons, "edge", ["edge_node", "serve", "--port", "0", "--log-format", "json"],
                 edge_env(tmp_path, key, SEMINOTE_EDGE_SERVER__MAX_SESSIONS="3"), tmp_path)
    url = await edge_url(edge)
    status, body = await get(url + "/healthz")
    assert status == 200 and body.count('"alive": true') == 2, body
    wav = piece_wav()
    tickets = [ticket(key, i) for i in range(3)]
    clients = [PracticeClient(url + "/v1/whip", t, FileAudioTrack(wav, tail_s=20.0)) for t in tickets]
    try:
        for c in clients:
            await c.start()
        for c in clients:
            await c.wait_for(lambda e: e.get("type") == "onset", EVENT_TIMEOUT_S)
        _, text = await get(url + "/metrics")
        assert sample(text, "seminote_edge_sessions") == 3.0
        per_worker = [sample(text, f'seminote_edge_worker_sessions{{worker="{i}"}}') for i in (0, 1)]
        assert sorted(per_worker) == [1.0, 2.0]  # placed on the least loaded worker each time
        assert sample(text, "seminote_edge_sessions_max") == 3.0
        assert sample(text, 'seminote_edge_events_sent_total{type="onset"}') >= 3  # summed over both workers
        pids = {line.get("pid") for line in edge.log_lines() if line.get("event") == "worker listening"}
        assert len(pids) == 2

        # the edge's total, not a worker's, is the limit
        with pytest.raises(WhipRefused) as full:
            async with PracticeClient(url + "/v1/whip", ticket(key, 9), FileAudioTrack(wav)):
                pass
        assert full.value.status == 503 and full.value.code == "at_capacity"
        status, _ = await get(url + "/readyz")
        assert status == 503

        # a ticket is single use across workers: DELETE frees a slot, the same ticket still may not return
        first = clients.pop(0)
        await first.aclose()
        await wait_metric(url, "seminote_edge_sessions", 2.0)
        with pytest.raises(WhipRefused) as replayed:
            async with PracticeClient(url + "/v1/whip", tickets[0], FileAudioTrack(wav)):
                pass
        assert replayed.value.status == 403 and replayed.value.code == "ticket_replayed"
        closed = [line for line in edge.log_lines() if line.get("event") == "session closing"]
        assert [line.get("reason") for line in closed] == ["deleted"]
    finally:
        for c in clients:
            await c.aclose()
    await wait_metric(url, "seminote_edge_sessions", 0.0)
    edge.signal()
    assert edge.proc is not None
    assert await asyncio.to_thread(edge.proc.wait, EXIT_TIMEOUT_S) == 0, edge.log_tail()


@pytest.fixture
async def control(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    settings = ControlSettings(
        state_dir=tmp_path / "cp", grpc=GrpcSettings(port=0, shutdown_grace_s=0.5), gateway=GatewaySettings(enabled=False),
        auth=AuthSettings(enrollment_tokens=[TOKEN], admin_tokens=[TOKEN], client_api_keys=[TOKEN]),
        registry=RegistrySettings(report_interval_s=0.5, ttl_s=5.0),
    )
    async with ControlPlane(settings) as cp:
        yield cp


async def test_the_control_plane_sees_one_edge_with_every_workers_sessions(
    tmp_path: Path, daemons: list[Daemon], control: ControlPlane
) -> None:
    key = generate_keypair()[0]
    env = edge_env(tmp_path, key, SEMINOTE_EDGE_SERVER__MAX_SESSIONS="12",
                   SEMINOTE_EDGE_CONTROL__ADDR=f"127.0.0.1:{control.port}",
                   SEMINOTE_EDGE_CONTROL__ENROLLMENT_TOKEN=TOKEN)
    edge = spawn(daemons, "edge", ["edge_node", "serve", "--port", "0", "--log-format", "json"], env, tmp_path)
    url = await edge_url(edge)
    assert control.registry is not None
    wav = piece_wav()
    clients = [PracticeClient(url + "/v1/whip", ticket(key, i), FileAudioTrack(wav, tail_s=20.0)) for i in range(3)]
    try:
        for c in clients:
            await c.start()
        _, text = await get(url + "/metrics")
        assert all(sample(text, f'seminote_edge_worker_sessions{{worker="{i}"}}') >= 1 for i in (0, 1))
        deadline = time.monotonic() + 15
        while True:
            entry = control.registry.edges.get(EDGE_ID)
            if entry is not None and len(entry.load.session_ids) == 3:
                break
            assert time.monotonic() < deadline, "the control plane never saw the three sessions"
            await asyncio.sleep(0.1)
        assert list(control.registry.edges) == [EDGE_ID]  # one edge, not one per worker
        assert entry.capacity == 12  # the whole edge's capacity
        assert entry.load.sessions_light == 3
        assert sorted(entry.load.session_ids) == sorted(c.session_url.rsplit("/", 1)[1] for c in clients  # type: ignore[union-attr]
                                                        if c.session_url)
    finally:
        for c in clients:
            await c.aclose()
    edge.signal()
    assert edge.proc is not None
    assert await asyncio.to_thread(edge.proc.wait, EXIT_TIMEOUT_S) == 0, edge.log_tail()


async def test_a_stuck_worker_is_killed_and_the_others_keep_serving(tmp_path: Path, daemons: list[Daemon]) -> None:
    key = generate_keypair()[0]
    edge = spawn(daemons, "edge", ["edge_node", "serve", "--port", "0", "--log-format", "json"],
                 edge_env(tmp_path, key), tmp_path)
    url = await edge_url(edge)
    pids = {int(line["worker"]): int(line["pid"]) for line in edge.log_lines()  # type: ignore[call-overload]
            if line.get("event") == "worker listening"}
    os.kill(pids[0], signal.SIGSTOP)  # its event loop stops answering, as a stuck loop would
    try:
        deadline = time.monotonic() + WORKER_STUCK_S + 20
        while True:
            _, text = await get(url + "/metrics")
            if sample(text, 'seminote_edge_worker_up{worker="0"}') == 0.0:
                break
            assert time.monotonic() < deadline, "the stuck worker was not noticed"
            await asyncio.sleep(0.5)
        assert any(str(line.get("event")).startswith("edge worker stuck") for line in edge.log_lines())
        assert sample(text, 'seminote_edge_worker_up{worker="1"}') == 1.0
        status, _ = await get(url + "/healthz")
        assert status == 200
        async with PracticeClient(url + "/v1/whip", ticket(key, 0), FileAudioTrack(piece_wav(), tail_s=5.0)) as c:
            await c.wait_for(lambda e: e.get("type") == "onset", EVENT_TIMEOUT_S)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pids[0], signal.SIGCONT)


async def test_workers_do_not_outlive_a_killed_front(tmp_path: Path, daemons: list[Daemon]) -> None:
    """SIGKILL of the front (no drain possible): its workers get SIGTERM from the kernel and exit."""
    key = generate_keypair()[0]
    edge = spawn(daemons, "edge", ["edge_node", "serve", "--port", "0", "--log-format", "json"],
                 edge_env(tmp_path, key), tmp_path)
    await edge_url(edge)
    pids = [int(line["pid"]) for line in edge.log_lines()  # type: ignore[call-overload]
            if line.get("event") == "worker listening"]
    assert len(pids) == 2
    assert edge.proc is not None
    edge.proc.kill()
    deadline = time.monotonic() + EXIT_TIMEOUT_S
    alive = pids
    while alive:
        assert time.monotonic() < deadline, f"workers {alive} outlived the front"
        await asyncio.sleep(0.2)
        alive = [pid for pid in pids if _alive(pid)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie (exited, not yet reaped by init) is not alive
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True
