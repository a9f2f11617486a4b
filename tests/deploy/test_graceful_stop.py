"""SIGTERM with live sessions on a real ``seminote-edge serve`` (result sync on, real nats-server):
the edge stops admitting (``/readyz`` 503, new offers 503 ``draining``), tells systemd (STOPPING=1,
EXTEND_TIMEOUT_USEC), lets every open session play to its end and say its summary without an error,
flushes the outbox to JetStream and exits 0, well before the drain deadline. A session still open at
the deadline is ended with its final events, not an error. (A ``summary`` needs a reference piece,
which these sessions do not name; the session's own end is its closed channel.)

Sessions: ``SEMINOTE_TEST_DRAIN_SESSIONS`` (default 4; the acceptance run uses 20).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import nats
import numpy as np
import pytest

from control_plane.jetstream import results_stream_config
from control_plane.settings import ResultSyncSettings
from edge_node.client import FileAudioTrack, PracticeClient
from edge_node.errors import WhipRefused
from edge_node.material import midi, render
from edge_node.tickets import TicketClaims, generate_keypair, mint_ticket, private_key_pem

from .conftest import START_TIMEOUT_S, Daemon, free_port, spawn

EDGE_ID = "edge-drain"
SESSIONS = int(os.environ.get("SEMINOTE_TEST_DRAIN_SESSIONS", "4"))
DRAIN_TIMEOUT_S = 60.0
SIGTERM_AFTER_AUDIO_S = 1.0  # every session has been playing this long when SIGTERM arrives
SESSION_TIMEOUT_S = 90.0
EXIT_TIMEOUT_S = 30.0
STATUS_TIMEOUT_S = 3.0  # the edge's heartbeat is 1 s with WATCHDOG_USEC=2 s; the piece lasts about 4 s
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"

pytestmark = pytest.mark.timeout(300)


def piece_wav() -> Path:
    """A short rendered melody (fluidsynth, FluidR3 GM): about 4 s of piano."""
    piece = midi.melody(np.random.default_rng(8), lo=55, hi=79, n_notes=8, bpm=120.0)
    return render.render(piece.midi, render.RenderOptions(tail_s=0.3))


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[str]:
    """A real ``nats-server -js`` on a free port (killed at the end)."""
    if not Path(NATS_SERVER).exists():
        pytest.skip("nats-server is not installed (scripts/setup.sh installs it)")
    port = free_port()
    proc = subprocess.Popen([NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(tmp_path / "js")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "nats-server did not start"
                time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(10)


@pytest.fixture
async def nats_url(nats_server: str) -> str:
    """The server with the results stream the relay publishes to (the control plane makes it in production)."""
    nc = await nats.connect(nats_server)
    try:
        await nc.jetstream().add_stream(results_stream_config(ResultSyncSettings()))
    finally:
        await nc.close()
    return nats_server


def ticket(key: object, n: int, ttl_s: float = 300.0) -> str:
    now = time.time()
    claims = TicketClaims(session_id=f"drain-{n}-{time.monotonic_ns()}", user=f"student-{n}", edge_id=EDGE_ID,
                          iat=now, exp=now + ttl_s)
    return mint_ticket(key, claims)  # type: ignore[arg-type]


async def edge_url(d: Daemon) -> str:
    await asyncio.to_thread(d.wait_for, "READY=1", START_TIMEOUT_S)
    for line in d.log_lines():
        if line.get("event") == "edge listening":
            return str(line["url"]).rstrip("/")
    raise AssertionError(d.log_tail())


async def metrics_text(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
        return await resp.text()


async def readyz(url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(url + "/readyz") as resp:
        return resp.status


async def test_sigterm_lets_live_sessions_finish_flushes_the_outbox_and_exits_0(
    tmp_path: Path, daemons: list[Daemon], nats_url: str
) -> None:
    key = generate_keypair()[0]
    (tmp_path / "ticket.pem").write_text(private_key_pem(key))
    outbox = tmp_path / "outbox.db"
    env = {"SEMINOTE_EDGE_EDGE_ID": EDGE_ID, "SEMINOTE_EDGE_SERVER__TICKET_PRIVATE_KEY": str(tmp_path / "ticket.pem"),
           "SEMINOTE_EDGE_SERVICE__DRAIN_TIMEOUT_S": str(DRAIN_TIMEOUT_S),
           "SEMINOTE_EDGE_SYNC__ENABLED": "true", "SEMINOTE_EDGE_SYNC__NATS_URLS": f'["{nats_url}"]',
           "SEMINOTE_EDGE_SYNC__OUTBOX_PATH": str(outbox), "SEMINOTE_EDGE_SYNC__FLUSH_INTERVAL_MS": "100"}
    wav = await asyncio.to_thread(piece_wav)
    edge = spawn(daemons, "edge", ["edge_node", "serve", "--port", "0", "--log-format", "json"], env, tmp_path,
                 watchdog_usec=2_000_000)
    url = await edge_url(edge)

    clients = [PracticeClient(url + "/v1/whip", ticket(key, i), FileAudioTrack(wav, tail_s=0.3))
               for i in range(SESSIONS)]
    async with contextlib.AsyncExitStack() as stack:
        for c in clients:
            stack.push_async_callback(c.aclose)
        await asyncio.gather(*(c.start() for c in clients))
        streams = [asyncio.create_task(c.stream(stop=True, timeout_s=SESSION_TIMEOUT_S), name=f"client-{i}")
                   for i, c in enumerate(clients)]
        stack.callback(lambda: [t.cancel() for t in streams])
        await asyncio.wait_for(asyncio.gather(*(c.channel_open.wait() for c in clients)), SESSION_TIMEOUT_S)
        # systemctl status shows the live count (the heartbeat refreshes STATUS= every second here)
        await asyncio.to_thread(edge.wait_for, f"STATUS=serving {SESSIONS} sessions", STATUS_TIMEOUT_S)
        assert all(not t.done() for t in streams), "the sessions must still be live at SIGTERM"

        edge.signal()
        sigterm_at = time.monotonic()
        await asyncio.to_thread(edge.wait_for, "STOPPING=1", EXIT_TIMEOUT_S)
        assert await readyz(url) == 503  # takes no new sessions...
        assert "seminote_edge_accepting 0.0" in await metrics_text(url)
        late = PracticeClient(url + "/v1/whip", ticket(key, 999), FileAudioTrack(wav))
        stack.push_async_callback(late.aclose)
        with pytest.raises(WhipRefused) as refused:
            await late.start()
        assert refused.value.status == 503 and refused.value.code == "draining"

        await asyncio.wait_for(asyncio.gather(*streams), SESSION_TIMEOUT_S)  # ...but the live ones play on
        assert edge.proc is not None
        code = await asyncio.to_thread(edge.proc.wait, EXIT_TIMEOUT_S)
        stopped_after_s = time.monotonic() - sigterm_at

    assert code == 0, edge.log_tail()
    assert stopped_after_s < DRAIN_TIMEOUT_S  # the sessions ended on their own, not at the deadline
    for i, c in enumerate(clients):
        events = [r.event for r in c.events]
        assert not [e for e in events if e["type"] == "error"], (i, events)
        assert c.channel_closed.is_set(), i  # the edge finished the session after its stop
        assert sum(e["type"] == "note" and e["end"] is not None for e in events) >= 4, i
        assert [e["seq"] for e in events] == list(range(len(events)))
    edge.collect(0.2)  # what it sent after STOPPING=1 is queued on the socket
    fields = edge.fields()
    assert any(f.startswith("EXTEND_TIMEOUT_USEC=") for f in fields)
    assert f"STATUS=draining: {SESSIONS} sessions left" in fields
    drained = [line for line in edge.log_lines() if line.get("event") == "edge drained"]
    assert drained and drained[0]["sessions_left"] == 0
    closed = [str(line.get("reason")) for line in edge.log_lines() if line.get("event") == "session closing"]
    assert sorted(closed) == ["client_stop"] * SESSIONS, closed

    conn = sqlite3.connect(outbox)
    try:
        left = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        recorded = conn.execute("SELECT COUNT(*) FROM local_sessions").fetchone()[0]
    finally:
        conn.close()
    assert left == 0  # flushed to JetStream before exit
    assert recorded == SESSIONS
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().stream_info(ResultSyncSettings().stream_name)
    finally:
        await nc.close()
    assert info.state.messages >= SESSIONS  # at least every session's summary
    print(json.dumps({"sessions": SESSIONS, "sigterm_to_exit_s": round(stopped_after_s, 2),
                      "drain_timeout_s": DRAIN_TIMEOUT_S, "outbox_rows_left": left,
                      "error_events": sum(r.event["type"] == "error" for c in clients for r in c.events),
                      "jetstream_messages": info.state.messages, "exit_code": code}))


@pytest.mark.parametrize(("drain_timeout_s", "signals"), [(1.0, 1), (DRAIN_TIMEOUT_S, 2)],
                         ids=["deadline", "second-signal"])
async def test_a_session_still_open_at_the_deadline_or_a_second_signal_is_ended_without_an_error(
    tmp_path: Path, daemons: list[Daemon], drain_timeout_s: float, signals: int
) -> None:
    key = generate_keypair()[0]
    (tmp_path / "ticket.pem").write_text(private_key_pem(key))
    env = {"SEMINOTE_EDGE_EDGE_ID": EDGE_ID, "SEMINOTE_EDGE_SERVER__TICKET_PRIVATE_KEY": str(tmp_path / "ticket.pem"),
           "SEMINOTE_EDGE_SERVICE__DRAIN_TIMEOUT_S": str(drain_timeout_s)}
    wav = await asyncio.to_thread(piece_wav)
    edge = spawn(daemons, "edge", ["edge_node", "serve", "--port", "0", "--log-format", "json"], env, tmp_path)
    url = await edge_url(edge)
    async with PracticeClient(url + "/v1/whip", ticket(key, 0), FileAudioTrack(wav, tail_s=30.0)) as client:
        await asyncio.wait_for(client.channel_open.wait(), SESSION_TIMEOUT_S)
        await asyncio.sleep(SIGTERM_AFTER_AUDIO_S)
        edge.signal()
        sigterm_at = time.monotonic()
        await asyncio.to_thread(edge.wait_for, "STOPPING=1", EXIT_TIMEOUT_S)
        if signals == 2:
            edge.signal()
        await asyncio.wait_for(client.channel_closed.wait(), EXIT_TIMEOUT_S)
        assert edge.proc is not None
        assert await asyncio.to_thread(edge.proc.wait, EXIT_TIMEOUT_S) == 0, edge.log_tail()
        stopped_after_s = time.monotonic() - sigterm_at
    assert stopped_after_s < EXIT_TIMEOUT_S < DRAIN_TIMEOUT_S  # the audio would have run on for 30 s
    events = [r.event for r in client.events]
    assert any(e["type"] == "note" for e in events)
    assert not [e for e in events if e["type"] == "error"], events
    closed = [line.get("reason") for line in edge.log_lines() if line.get("event") == "session closing"]
    assert closed == ["shutdown"]
    drained = [line for line in edge.log_lines() if line.get("event") == "edge drained"]
    assert drained and drained[0]["sessions_left"] == 1 and drained[0]["cut_short"] == (signals == 2)
