"""Control messages on the feedback channel, hostile clients (floods, oversized or garbage messages,
silence, vanishing) and analysis failures: each handled inside its own session."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from conftest import Edge, RenderedPiece

from edge_node.client import FileAudioTrack, PracticeClient


def is_error(code: str):
    return lambda e: e.get("type") == "error" and e.get("code") == code


async def wait_until(predicate, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_ping_mode_and_piece_control_messages(edge: Edge, blip_piece: RenderedPiece) -> None:
    async with PracticeClient(edge.whip_url, edge.ticket(), FileAudioTrack(blip_piece.wav)) as client:
        await client.send_control({"type": "ping", "id": 42})
        pong = await client.wait_for(lambda e: e.get("type") == "pong", 5)
        assert pong["id"] == 42 and "seq" not in pong
        await client.send_control({"type": "set_mode", "mode": "detailed"})
        mode = await client.wait_for(lambda e: e.get("type") == "mode", 5)
        assert mode["mode"] == "detailed" and mode["reason"] == "client" and "seq" in mode
        await client.send_control({"type": "set_piece", "piece": "minuet-in-g"})
        ack = await client.wait_for(lambda e: e.get("type") == "ack", 5)
        assert ack["piece"] == "minuet-in-g"
        session = next(iter(edge.manager.sessions.values()))
        assert session.pipeline.mode == "detailed" and session.piece == "minuet-in-g"


async def test_garbage_and_oversized_messages_get_error_events(edge: Edge, blip_piece: RenderedPiece) -> None:
    async with PracticeClient(edge.whip_url, edge.ticket(), FileAudioTrack(blip_piece.wav)) as client:
        await client.send_control("{not json")
        await client.wait_for(is_error("bad_message"), 5)
        await client.send_control("x" * 20_000)
        too_big = await client.wait_for(is_error("message_too_large"), 5)
        assert "4096" in too_big["message"]
        await client.send_control(b"\x00\x01binary")
        await client.send_control({"type": "set_mode", "mode": "turbo"})
        await client.send_control({"type": "launch_missiles"})
        await client.send_control({"type": "ping", "id": 1})
        await client.wait_for(lambda e: e.get("type") == "pong", 5)
        assert edge.manager.count == 1, "bad messages do not end the session"
        seqs = [r.event["seq"] for r in client.events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


async def test_flood_is_rate_limited_then_ends_only_that_session(
    edge_factory, short_piece: RenderedPiece
) -> None:
    edge: Edge = await edge_factory(dc_rate_per_s=10, dc_burst=10, dc_max_dropped=200)
    calm = PracticeClient(edge.whip_url, edge.ticket(), FileAudioTrack(short_piece.wav, tail_s=0.3))
    flooder = PracticeClient(edge.whip_url, edge.ticket(), FileAudioTrack(short_piece.wav))
    async with calm, flooder:
        await asyncio.wait_for(flooder.channel_open.wait(), 10)
        for i in range(1000):
            try:
                await flooder.send_control({"type": "ping", "id": i})
            except ConnectionError:
                break
        await flooder.wait_for(is_error("rate_limited"), 5)
        await asyncio.wait_for(flooder.channel_closed.wait(), 10)
        pongs = [r for r in flooder.replies if r.event.get("type") == "pong"]
        assert 10 <= len(pongs) < 100, "only the burst and the sustained rate are served"
        await wait_until(lambda: edge.manager.count == 1, 5)
        assert edge.metrics.sessions_closed.labels("flood")._value.get() == 1
        events = await calm.stream(timeout_s=short_piece.duration_s + 20)
    onsets = [r for r in events if r.event["type"] == "onset"]
    assert len(onsets) >= 0.9 * len(short_piece.onsets), "the other session kept its feedback"


async def test_client_that_never_sends_audio_is_ended_by_timeout(edge_factory) -> None:
    edge: Edge = await edge_factory(start_timeout_s=1.0, watchdog_interval_s=0.2)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        channel = pc.createDataChannel("feedback")
        pc.addTransceiver("audio", direction="sendonly")  # no track: nothing is ever sent
        await pc.setLocalDescription(await pc.createOffer())
        import aiohttp

        async with aiohttp.ClientSession() as http, http.post(
            edge.whip_url, data=pc.localDescription.sdp,
            headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {edge.ticket()}"},
        ) as r:
            assert r.status == 201
            answer = await r.text()
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        closed = asyncio.Event()
        channel.on("close", closed.set)
        assert edge.manager.count == 1
        await asyncio.wait_for(closed.wait(), 10)
        await wait_until(lambda: edge.manager.count == 0, 5)
        assert edge.metrics.sessions_closed.labels("no_audio")._value.get() == 1
    finally:
        await pc.close()


async def test_vanished_client_is_ended_within_ten_seconds(edge: Edge, short_piece: RenderedPiece) -> None:
    """Default settings: the client stops sending and says nothing (no DELETE, no close)."""
    track = FileAudioTrack(short_piece.wav)
    client = PracticeClient(edge.whip_url, edge.ticket(), track)
    await client.start()
    try:
        await client.wait_for(lambda e: e.get("type") == "onset", 10)
        assert edge.manager.count == 1
        # Vanish: the track stops producing audio; the peer stays up but silent.
        track.stop()
        vanished_at = time.monotonic()
        await wait_until(lambda: edge.manager.count == 0, 12)
        assert time.monotonic() - vanished_at <= 10.0
        assert edge.metrics.sessions_closed.labels("media_timeout")._value.get() == 1
    finally:
        await client.aclose(delete=False)


async def test_analysis_failure_is_an_error_event_and_the_session_goes_on(
    edge: Edge, short_piece: RenderedPiece
) -> None:
    track = FileAudioTrack(short_piece.wav, tail_s=0.3)
    async with PracticeClient(edge.whip_url, edge.ticket(), track) as client:
        await client.wait_for(lambda e: e.get("type") == "onset", 10)
        session = next(iter(edge.manager.sessions.values()))
        real_process = session.pipeline.process
        calls = 0

        def broken(chunk: np.ndarray):
            nonlocal calls
            calls += 1
            if calls == 3:
                raise FloatingPointError("kernel blew up")
            return real_process(chunk)

        session.pipeline.process = broken  # type: ignore[method-assign]
        err = await client.wait_for(is_error("analysis_failed"), 5)
        assert "FloatingPointError" in err["message"]
        events = await client.stream(timeout_s=short_piece.duration_s + 20)
    seqs = [r.event["seq"] for r in events]
    assert seqs == list(range(len(seqs))), "seq continues across the restart"
    after = [r.event for r in events if r.event["seq"] > err["seq"] and r.event["type"] == "onset"]
    assert after, "analysis resumed after the failure"
    times = [r.event["t"] for r in events if r.event["type"] == "onset"]
    assert times == sorted(times), "the time base continues across the restart"
    assert edge.metrics.errors.labels("analysis_failed")._value.get() == 1
