"""Fixtures for the edge's live-session tests: ticket keys, an in-process edge on a free port, a
rendered piano piece with its MIDI ground truth, and the onset scoring the acceptance uses."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mir_eval
import numpy as np
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_node.material import midi, render
from edge_node.metrics import EdgeMetrics
from edge_node.sessions import SessionManager
from edge_node.settings import EdgeSettings, ServerSettings
from edge_node.signaling import MANAGER_KEY, create_app
from edge_node.tickets import TicketClaims, generate_keypair, mint_ticket, private_key_pem

EDGE_ID = "edge-test"
ONSET_WINDOW_S = 0.05


@pytest.fixture(scope="session")
def ticket_key() -> Ed25519PrivateKey:
    return generate_keypair()[0]


@dataclass
class Edge:
    """An edge served in the test's event loop on 127.0.0.1:<free port>."""

    base_url: str
    app: web.Application
    key: Ed25519PrivateKey

    @property
    def whip_url(self) -> str:
        return self.base_url + "/v1/whip"

    @property
    def manager(self) -> SessionManager:
        return self.app[MANAGER_KEY]

    @property
    def metrics(self) -> EdgeMetrics:
        return self.manager.metrics

    def ticket(self, ttl_s: float = 60.0, **over: Any) -> str:
        now = time.time()
        fields: dict[str, Any] = {
            "session_id": f"s-{time.monotonic_ns()}", "user": "student", "edge_id": EDGE_ID,
            "iat": now, "exp": now + ttl_s,
        }
        fields.update(over)
        return mint_ticket(self.key, TicketClaims(**fields))


EdgeFactory = Callable[..., Any]


@pytest.fixture
async def edge_factory(ticket_key: Ed25519PrivateKey) -> AsyncIterator[EdgeFactory]:
    """Start edges with server settings overridden by keyword; all are stopped at the end."""
    runners: list[web.AppRunner] = []

    async def start(**server_overrides: Any) -> Edge:
        # A loaded CI machine must not turn admission tests into overload refusals; the overload
        # test turns it back on.
        server_overrides.setdefault("overload_lag_ms", 0.0)
        server = ServerSettings(ticket_private_key=private_key_pem(ticket_key), **server_overrides)
        app = create_app(EdgeSettings(edge_id=EDGE_ID, server=server))
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return Edge(f"http://127.0.0.1:{port}", app, ticket_key)

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


@pytest.fixture
async def edge(edge_factory: EdgeFactory) -> Edge:
    return await edge_factory()


@dataclass(frozen=True)
class RenderedPiece:
    wav: Path
    onsets: np.ndarray  # ground-truth onset times (s), simultaneous notes merged
    duration_s: float


def rendered(piece: midi.Piece) -> RenderedPiece:
    wav = render.render(piece.midi)
    return RenderedPiece(wav, midi.onsets_of(piece.midi), piece.midi.get_end_time() + 1.0)


@pytest.fixture(scope="session")
def short_piece() -> RenderedPiece:
    """About 8 s of single-voice melody at 100 BPM: 16 notes, varied registers and velocities."""
    return rendered(midi.melody(np.random.default_rng(11), lo=48, hi=84, n_notes=16, bpm=100))


@pytest.fixture(scope="session")
def blip_piece() -> RenderedPiece:
    """Two seconds with three notes: enough audio for sessions whose content does not matter."""
    return rendered(midi.melody(np.random.default_rng(5), lo=60, hi=72, n_notes=3, bpm=120))


def align_offset(reference: np.ndarray, estimated: np.ndarray) -> float:
    """The constant delay between the stream's time base and the MIDI (codec delay, capture start):
    the median distance from each reference onset to its nearest estimate."""
    if estimated.size == 0 or reference.size == 0:
        return 0.0
    nearest = estimated[np.abs(estimated[None, :] - reference[:, None]).argmin(axis=1)]
    return float(np.median(nearest - reference))


def onset_f_measure(reference: np.ndarray, estimated: np.ndarray, offset_s: float) -> float:
    f, _, _ = mir_eval.onset.f_measure(reference, np.sort(estimated - offset_s), window=ONSET_WINDOW_S)
    return float(f)


@contextlib.contextmanager
def served_edge(env_overrides: dict[str, str], start_timeout_s: float = 60.0) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``python -m edge_node serve --port 0`` as its own process; yields it and its base URL (from
    its "edge listening" log line) and stops it (SIGTERM, then SIGKILL) on the way out."""
    env = dict(os.environ, **env_overrides)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_node", "serve", "--port", "0", "--log-format", "json"],
        env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )
    try:
        assert proc.stderr is not None
        url = None
        deadline = time.monotonic() + start_timeout_s
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            if '"edge listening"' in line:
                url = json.loads(line)["url"]
        assert url, "edge did not report its URL"
        threading.Thread(target=proc.stderr.read, daemon=True).start()  # never block on a full pipe
        yield proc, url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
