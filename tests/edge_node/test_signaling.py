"""The edge's HTTP surface: WHIP admission and every kind of bad input, each refused with a clear status
while a session that is already streaming carries on unharmed."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from conftest import EDGE_ID, Edge, RenderedPiece

from edge_node.client import FileAudioTrack, PracticeClient
from edge_node.tickets import TicketClaims, generate_keypair, mint_ticket


async def make_offer(audio: bool = True, video: bool = False, data: bool = True, codec: str | None = None) -> str:
    """A real aiortc offer with the chosen sections (and audio codec)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        if data:
            pc.createDataChannel("feedback")
        if audio:
            t = pc.addTransceiver("audio", direction="sendonly")
            if codec is not None:
                caps = RTCRtpReceiver.getCapabilities("audio")
                assert caps is not None
                t.setCodecPreferences([c for c in caps.codecs if c.mimeType.lower() == codec.lower()])
        if video:
            pc.addTransceiver("video", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        assert pc.localDescription is not None
        return pc.localDescription.sdp
    finally:
        await pc.close()


async def post(edge: Edge, body: str | bytes, ticket: str | None, content_type: str = "application/sdp"):
    headers = {"Content-Type": content_type}
    if ticket is not None:
        headers["Authorization"] = f"Bearer {ticket}"
    async with aiohttp.ClientSession() as http, http.post(edge.whip_url, data=body, headers=headers) as r:
        text = await r.text()
        return r.status, r.headers, text


async def test_health_ready_metrics_and_page(edge: Edge) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(edge.base_url + "/healthz") as r:
            assert r.status == 200 and (await r.json())["edge_id"] == EDGE_ID
        async with http.get(edge.base_url + "/readyz") as r:
            assert r.status == 200 and (await r.json()) == {"ready": True, "sessions": 0, "max_sessions": 64}
        async with http.get(edge.base_url + "/metrics") as r:
            text = await r.text()
            assert r.status == 200
            for name in ("seminote_edge_sessions ", "seminote_edge_feedback_latency_seconds_bucket",
                         "seminote_edge_audio_frames_dropped", "seminote_edge_errors"):
                assert name in text
        async with http.get(edge.base_url + "/") as r:
            assert r.status == 200 and "<html" in (await r.text()).lower()
        async with http.post(edge.base_url + "/v1/dev/ticket") as r:
            assert r.status in (404, 405), "dev tickets are off unless a setting enables them"


async def test_valid_offer_gets_201_location_and_an_opus_only_answer(edge: Edge) -> None:
    status, headers, answer = await post(edge, await make_offer(), edge.ticket(session_id="abc"))
    assert status == 201, answer
    assert headers["Location"] == "/v1/sessions/abc"
    assert headers["Content-Type"].startswith("application/sdp")
    audio = answer.split("m=audio", 1)[1].split("m=", 1)[0]
    assert "opus/48000" in audio and "PCMU" not in audio
    assert edge.manager.count == 1


BAD_OFFERS = {
    "garbage": (400, "malformed_sdp"),
    "no_audio": (422, "no_audio"),
    "video_only": (422, "no_audio"),
    "audio_and_video": (422, "video_not_supported"),
    "pcmu_only": (422, "unsupported_codec"),
    "no_data_channel": (422, "no_data_channel"),
    "truncated": (400, "malformed_sdp"),
    "candidate_flood": (422, "too_many_candidates"),
}


async def bad_offer(kind: str) -> str:
    if kind == "garbage":
        return "hello, this is not SDP \x00\x01"
    if kind == "no_audio":
        return await make_offer(audio=False)
    if kind == "video_only":
        return await make_offer(audio=False, video=True)
    if kind == "audio_and_video":
        return await make_offer(video=True)
    if kind == "pcmu_only":
        return await make_offer(codec="audio/PCMU")
    if kind == "no_data_channel":
        return await make_offer(data=False)
    if kind == "candidate_flood":
        offer = await make_offer()
        flood = "".join(f"a=candidate:{i} 1 udp 2130706431 10.0.{i // 250}.{i % 250} {40000 + i} typ host\r\n"
                        for i in range(500))
        return offer.replace("a=end-of-candidates", flood + "a=end-of-candidates", 1)
    if kind == "truncated":
        return "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", sorted(BAD_OFFERS))
async def test_bad_offers_are_refused_with_a_reason(edge: Edge, kind: str) -> None:
    status, _, body = await post(edge, await bad_offer(kind), edge.ticket())
    want_status, want_code = BAD_OFFERS[kind]
    assert (status, json_code(body)) == (want_status, want_code), body
    assert edge.manager.count == 0


def json_code(body: str) -> str:
    import json

    return str(json.loads(body)["error"])


async def test_ticket_problems_are_401_or_403(edge: Edge) -> None:
    offer = await make_offer()
    forger, _ = generate_keypair()
    now = time.time()
    forged = mint_ticket(forger, TicketClaims("s-f", "mallory", EDGE_ID, exp=now + 60, iat=now))
    cases = [
        (None, 401, "ticket_missing"),
        ("nonsense", 401, "ticket_malformed"),
        (forged, 401, "ticket_forged"),
        (edge.ticket(iat=now - 120, exp=now - 60), 401, "ticket_expired"),
        (edge.ticket(edge_id="edge-elsewhere"), 403, "ticket_wrongedge"),
    ]
    for ticket, want_status, want_code in cases:
        status, headers, body = await post(edge, offer, ticket)
        assert (status, json_code(body)) == (want_status, want_code), body
        if status == 401:
            assert headers["WWW-Authenticate"].startswith("Bearer")
    good = edge.ticket()
    assert (await post(edge, offer, good))[0] == 201
    status, _, body = await post(edge, await make_offer(), good)
    assert (status, json_code(body)) == (403, "ticket_replayed")
    assert edge.manager.count == 1


async def test_huge_body_is_413_and_wrong_type_is_415(edge: Edge) -> None:
    status, _, body = await post(edge, b"v=0\r\n" + b"a" * (10 * 1024 * 1024), edge.ticket())
    assert (status, json_code(body)) == (413, "body_too_large")
    status, _, body = await post(edge, await make_offer(), edge.ticket(), content_type="text/plain")
    assert (status, json_code(body)) == (415, "unsupported_media_type")


async def test_full_edge_answers_503_with_retry_after_and_readyz_follows(edge_factory) -> None:
    edge = await edge_factory(max_sessions=2, retry_after_s=7)
    for _ in range(2):
        assert (await post(edge, await make_offer(), edge.ticket()))[0] == 201
    status, headers, body = await post(edge, await make_offer(), edge.ticket())
    assert (status, json_code(body), headers["Retry-After"]) == (503, "at_capacity", "7")
    async with aiohttp.ClientSession() as http, http.get(edge.base_url + "/readyz") as r:
        assert r.status == 503 and r.headers["Retry-After"] == "7"


async def test_delete_needs_the_sessions_own_ticket(edge: Edge) -> None:
    ticket = edge.ticket(session_id="to-delete")
    assert (await post(edge, await make_offer(), ticket))[0] == 201
    url = edge.base_url + "/v1/sessions/to-delete"
    async with aiohttp.ClientSession() as http:
        async with http.delete(url) as r:
            assert r.status == 401
        async with http.delete(url, headers={"Authorization": f"Bearer {edge.ticket()}"}) as r:
            assert r.status == 403
        async with http.delete(edge.base_url + "/v1/sessions/nope", headers={"Authorization": f"Bearer {ticket}"}) as r:
            assert r.status == 404
        async with http.delete(url, headers={"Authorization": f"Bearer {ticket}"}) as r:
            assert r.status == 204
        async with http.delete(url, headers={"Authorization": f"Bearer {ticket}"}) as r:
            assert r.status == 404
    assert edge.manager.count == 0
    assert edge.metrics.sessions_closed.labels("deleted")._value.get() == 1


async def test_bad_input_does_not_disturb_a_live_session(edge: Edge, short_piece: RenderedPiece) -> None:
    """A session streams a piece while every bad request above hits the same edge."""
    track = FileAudioTrack(short_piece.wav, tail_s=0.3)
    async with PracticeClient(edge.whip_url, edge.ticket(), track) as client:
        await asyncio.wait_for(client.channel_open.wait(), 10)
        for kind in sorted(BAD_OFFERS):
            status, _, _ = await post(edge, await bad_offer(kind), edge.ticket())
            assert status == BAD_OFFERS[kind][0]
        assert (await post(edge, b"x" * (10 * 1024 * 1024), edge.ticket()))[0] == 413
        assert (await post(edge, await make_offer(), "forged.ticket.x"))[0] == 401
        events = await client.stream(timeout_s=short_piece.duration_s + 20)
    onsets = [r.event["t"] for r in events if r.event["type"] == "onset"]
    assert len(onsets) >= 0.9 * len(short_piece.onsets)
    assert not [r for r in events if r.event["type"] == "error"]
    seqs = [r.event["seq"] for r in events]
    assert seqs == list(range(len(seqs)))


async def test_dev_ticket_endpoint_only_when_enabled_and_mints_usable_tickets(edge_factory) -> None:
    edge = await edge_factory(dev_tickets=True)
    async with aiohttp.ClientSession() as http, http.post(
        edge.base_url + "/v1/dev/ticket", json={"user": "page", "mode": "light"}
    ) as r:
        assert r.status == 200
        data = await r.json()
    assert data["whip_url"] == "/v1/whip"
    status, headers, _ = await post(edge, await make_offer(), data["ticket"])
    assert status == 201 and headers["Location"] == f"/v1/sessions/{data['session_id']}"
    assert np.isfinite(data["expires_at"])


async def test_overloaded_edge_refuses_new_sessions_until_it_catches_up(edge_factory) -> None:
    edge = await edge_factory(overload_lag_ms=300, watchdog_interval_s=0.1, retry_after_s=3)

    async def until(predicate, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)

    await until(lambda: not edge.manager.overloaded, 15)  # whatever a loaded test machine did so far
    assert (await post(edge, await make_offer(), edge.ticket()))[0] == 201
    # Block the event loop as a CPU-starved edge would be, for longer than the allowed lag.
    asyncio.get_running_loop().call_soon(time.sleep, 1.0)
    await until(lambda: edge.manager.overloaded, 5)
    status, headers, body = await post(edge, await make_offer(), edge.ticket())
    assert (status, json_code(body), headers["Retry-After"]) == (503, "overloaded", "3")
    async with aiohttp.ClientSession() as http, http.get(edge.base_url + "/readyz") as r:
        assert r.status == 503
    await until(lambda: not edge.manager.overloaded, 15)  # on time again; the spike fades (2 s half-life)
    assert (await post(edge, await make_offer(), edge.ticket()))[0] == 201
    assert edge.manager.count == 2


async def test_patch_takes_trickle_candidates_and_refuses_ice_restarts(edge: Edge) -> None:
    ticket = edge.ticket(session_id="trickle")
    offer = await make_offer()
    assert (await post(edge, offer, ticket))[0] == 201
    url = edge.base_url + "/v1/sessions/trickle"
    auth = {"Authorization": f"Bearer {ticket}"}
    ufrag = next(line for line in offer.splitlines() if line.startswith("a=ice-ufrag:"))
    frag = f"{ufrag}\r\na=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n"
    async with aiohttp.ClientSession() as http:
        async with http.patch(url, data=frag, headers={**auth, "Content-Type": "application/trickle-ice-sdpfrag"}) as r:
            assert r.status == 204 and r.headers["X-Candidates-Added"] == "1"
        async with http.patch(url, data=frag, headers={**auth, "Content-Type": "text/plain"}) as r:
            assert r.status == 415
        restart = "a=ice-ufrag:brandnew\r\na=ice-pwd:brandnewpasswordbrandnew00\r\n"
        async with http.patch(url, data=restart, headers={**auth, "Content-Type": "application/trickle-ice-sdpfrag"}) as r:
            assert r.status == 422 and (await r.json())["error"] == "ice_restart_unsupported"
        bad = f"{ufrag}\r\na=candidate:garbage\r\n"
        async with http.patch(url, data=bad, headers={**auth, "Content-Type": "application/trickle-ice-sdpfrag"}) as r:
            assert r.status == 400
    assert edge.manager.count == 1
