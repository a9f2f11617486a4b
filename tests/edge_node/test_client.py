"""A real aiortc client streams a rendered piece to a real edge on loopback; the feedback it receives
matches the MIDI ground truth, arrives while the piece plays, and is sequenced."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import Edge, RenderedPiece, align_offset, onset_f_measure, served_edge

from edge_node.client import FileAudioTrack, PracticeClient
from edge_node.errors import WhipRefused
from edge_node.tickets import private_key_pem


async def test_streamed_piece_yields_onsets_matching_the_midi(edge: Edge, short_piece: RenderedPiece) -> None:
    track = FileAudioTrack(short_piece.wav, tail_s=0.5)
    async with PracticeClient(edge.whip_url, edge.ticket(), track) as client:
        events = await client.stream(timeout_s=short_piece.duration_s + 20)
    onsets = [r for r in events if r.event["type"] == "onset"]
    estimated = np.array([r.event["t"] for r in onsets])
    offset = align_offset(short_piece.onsets, estimated)
    assert abs(offset) < 0.03, f"stream time base is off by {offset * 1000:.1f} ms"
    assert onset_f_measure(short_piece.onsets, estimated, offset) >= 0.9

    seqs = [r.event["seq"] for r in events]
    assert seqs[0] == 0
    assert all(b == a + 1 for a, b in zip(seqs, seqs[1:], strict=False)), "seq must increase by one"
    kinds = {r.event["type"] for r in events}
    assert {"onset", "pitch", "dynamics", "note"} <= kinds

    # Live, not batched: each onset arrives within a fraction of a second of its audio being sent.
    assert track.started_at is not None
    for rec in onsets:
        sent_audio_end = track.started_at + rec.event["t"] + 0.1
        assert rec.received_at < sent_audio_end + 0.5


async def test_session_ends_cleanly_after_stop_and_delete(edge: Edge, blip_piece: RenderedPiece) -> None:
    track = FileAudioTrack(blip_piece.wav, tail_s=0.2)
    client = PracticeClient(edge.whip_url, edge.ticket(), track)
    await client.start()
    assert edge.manager.count == 1
    await client.stream(timeout_s=20)
    await client.aclose()
    await client.aclose()  # twice is fine
    for _ in range(50):
        if edge.manager.count == 0:
            break
        await asyncio.sleep(0.05)
    assert edge.manager.count == 0
    closed = edge.metrics.sessions_closed.labels("client_stop")._value.get()
    assert closed == 1


async def test_refused_offer_raises_whip_refused_with_the_edges_reason(edge: Edge) -> None:
    track = FileAudioTrack(np.zeros(960, np.float32))
    client = PracticeClient(edge.whip_url, "not-a-ticket", track)
    with pytest.raises(WhipRefused) as info:
        await client.start()
    await client.aclose()
    assert info.value.status == 401
    assert info.value.code == "ticket_malformed"


def test_cli_ticket_and_client_stream_against_a_served_edge(
    tmp_path, ticket_key, blip_piece: RenderedPiece
) -> None:
    """`seminote-edge serve`, `ticket` and `client` as separate processes, as a user would run them."""
    key_file = tmp_path / "ticket.pem"
    key_file.write_text(private_key_pem(ticket_key))
    env_overrides = {"SEMINOTE_EDGE_SERVER__TICKET_PRIVATE_KEY": str(key_file), "SEMINOTE_EDGE_EDGE_ID": "edge-cli"}
    env = dict(os.environ, **env_overrides)
    exe = [sys.executable, "-m", "edge_node"]
    with served_edge(env_overrides) as (server, url):
        ticket = subprocess.run(
            [*exe, "ticket", "--ttl", "60", "--user", "cli-user"], env=env, capture_output=True,
            text=True, timeout=30, check=True,
        ).stdout.strip()
        assert ticket.startswith("snt1.")
        out = subprocess.run(
            [*exe, "client", str(blip_piece.wav), "--whip", url + "v1/whip", "--ticket", ticket, "--tail", "0.2"],
            env=env, capture_output=True, text=True, timeout=60,
        )
        assert out.returncode == 0, out.stderr
        events = [json.loads(line) for line in out.stdout.splitlines()]
        assert [e["seq"] for e in events] == list(range(len(events)))
        assert sum(e["type"] == "onset" for e in events) >= 2
        replay = subprocess.run(
            [*exe, "client", str(blip_piece.wav), "--whip", url + "v1/whip", "--ticket", ticket],
            env=env, capture_output=True, text=True, timeout=60,
        )
        assert replay.returncode == 1
        assert "403" in replay.stderr and "already used" in replay.stderr
        server.terminate()
        server.wait(timeout=20)
    assert server.returncode == 0
