"""Live sessions judged against a reference piece from the edge's library (ticket or set_piece)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from conftest import EDGE_ID, Edge
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_node.client import FileAudioTrack, PracticeClient
from edge_node.material import midi, render
from edge_node.settings import AnalysisSettings, EdgeSettings, ServerSettings
from edge_node.signaling import create_app
from edge_node.tickets import private_key_pem


@pytest.fixture
async def library_edge(tmp_path: Path, ticket_key: Ed25519PrivateKey) -> AsyncIterator[tuple[Edge, midi.Piece]]:
    piece = midi.melody(np.random.default_rng(21), lo=55, hi=79, n_notes=14, bpm=96)
    pieces = tmp_path / "pieces"
    pieces.mkdir()
    piece.midi.write(str(pieces / "minuet.mid"))
    (pieces / "broken.mid").write_bytes(b"MThd garbage")
    settings = EdgeSettings(
        edge_id=EDGE_ID,
        server=ServerSettings(ticket_private_key=private_key_pem(ticket_key), overload_lag_ms=0.0),
        analysis=AnalysisSettings(pieces_dir=pieces),
    )
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield Edge(f"http://127.0.0.1:{runner.addresses[0][1]}", runner.app, ticket_key), piece
    await runner.cleanup()


async def test_ticket_piece_gives_score_events_and_a_summary(library_edge: tuple[Edge, midi.Piece]) -> None:
    edge, piece = library_edge
    track = FileAudioTrack(render.render(piece.midi), tail_s=1.0)
    async with PracticeClient(edge.whip_url, edge.ticket(piece="minuet"), track) as client:
        events = [r.event for r in await client.stream(timeout_s=60)]
    scores = [e for e in events if e["type"] == "score"]
    n_ref = len(piece.midi.instruments[0].notes)
    assert len(scores) >= n_ref - 1
    correct = sum(e["verdict"] == "correct" for e in scores)
    assert correct / len(scores) >= 0.85, [e["verdict"] for e in scores]
    summary = [e for e in events if e["type"] == "summary"]
    assert len(summary) == 1 and summary[0]["pitch_accuracy"] >= 0.85


async def test_set_piece_refuses_unknown_unsafe_and_broken_pieces(library_edge: tuple[Edge, midi.Piece]) -> None:
    edge, piece = library_edge
    track = FileAudioTrack(render.render(piece.midi), tail_s=0.2)
    async with PracticeClient(edge.whip_url, edge.ticket(), track) as client:
        reasons = {}
        for n, bad in enumerate(("no-such-piece", "../pieces/minuet", ".hidden", "broken"), start=1):
            await client.send_control({"type": "set_piece", "piece": bad})
            for _ in range(100):  # one error per refused piece
                errors = [r.event for r in client.events if r.event["type"] == "error"]
                if len(errors) >= n:
                    break
                await asyncio.sleep(0.1)
            assert len(errors) == n and errors[-1]["code"] == "piece_unavailable"
            reasons[bad] = errors[-1]["message"]
        assert "no such piece" in reasons["no-such-piece"]
        assert "A-Z" in reasons["../pieces/minuet"] and "A-Z" in reasons[".hidden"]
        assert "no such piece" not in reasons["broken"]  # found, but not a MIDI file we can read
        await client.send_control({"type": "set_piece", "piece": "minuet"})
        first = await client.wait_for(lambda e: e["type"] == "score", timeout_s=30)
        assert first["verdict"] in ("correct", "wrong_pitch", "missed", "extra")
