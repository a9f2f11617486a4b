"""A lean load generator for capacity benchmarks: many real WebRTC practice clients in one event loop.

Each client is a real aiortc peer (ICE, DTLS, SRTP, SCTP data channel ``feedback`` on loopback), so
the edge does exactly the work it does for a phone. What is lean is the client's own side:

- audio is a rendered piece encoded to Opus **once** (20 ms packets, as the app's encoder makes them);
  every client sends those packets in a loop, each as the RTP packet aiortc's own sender would build
  (same SSRC, payload type, sequence numbers, timestamps and header extensions: mid, audio level),
  SRTP-protected with the peer's negotiated keys and written to its ICE socket. One pacer per process
  sends every client's next packet on time (2 ms slots, clients spread over the 20 ms frame as
  independent phones are), instead of a task, an encoder call and an RTP packetiser per client;
- the client's SCTP acknowledges DATA the way libwebrtc's dcSCTP does (every second packet, or after
  200 ms, at once when there is a gap), not after every packet as aiortc's does: what a phone sends.

``sent_at[k]`` is when packet ``k`` (samples ``k*960 ..`` of the looped piece) went to the socket and
``onsets`` the ``(t, received_at)`` of each onset event (both ``time.monotonic()``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket
from yarl import URL

FRAME_S = 0.02
FRAME_SAMPLES = 960
SLOT_S = 0.002  # pacer granularity: a client's packet leaves within this of its due time
SACK_EVERY_PACKETS = 2  # dcSCTP / RFC 4960 6.2: acknowledge at least every second DATA packet
SACK_DELAY_S = 0.2  # ... or after this long
HTTP_TIMEOUT_S = 30.0
_RTP_HEADER = struct.Struct("!BBHII")


class _SilentTrack(MediaStreamTrack):
    """An audio track aiortc's sender waits on forever: the pacer sends this client's RTP instead."""

    kind = "audio"

    async def recv(self) -> Any:
        await asyncio.get_running_loop().create_future()
        raise MediaStreamError  # never reached


def audio_level_dbov(pcm: np.ndarray) -> int:
    """RFC 6464 audio level (0 loud .. 127 silent) of one frame, as a phone's sender puts in the header."""
    rms = float(np.sqrt(np.mean(np.square(pcm, dtype=np.float64)))) if pcm.size else 0.0
    if rms <= 1e-7:
        return 127
    return int(min(127, max(0, round(-20.0 * np.log10(rms)))))


@dataclass
class PreparedAudio:
    """A piece as Opus packets, with each packet's audio level."""

    packets: Sequence[bytes]
    levels: Sequence[int]

    @property
    def period_s(self) -> float:
        return len(self.packets) * FRAME_S


@dataclass
class LeanClient:
    """One practice session seen from the load generator."""

    whip_url: str
    ticket: str
    audio: PreparedAudio
    pc: RTCPeerConnection | None = None
    session_url: str | None = None
    sent_at: list[float] = field(default_factory=list)
    onsets: list[tuple[float, float]] = field(default_factory=list)
    events: int = 0
    channel_open: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False
    next_due: float = 0.0
    _send: Any = None

    async def start(self, http: aiohttp.ClientSession) -> None:
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        channel = pc.createDataChannel("feedback")
        channel.on("open", self.channel_open.set)
        channel.on("message", self._on_message)
        transceiver = pc.addTransceiver(_SilentTrack(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        assert pc.localDescription is not None
        async with http.post(self.whip_url, data=pc.localDescription.sdp, headers={
            "Content-Type": "application/sdp", "Authorization": f"Bearer {self.ticket}",
        }) as resp:
            body = await resp.text()
            if resp.status != 201:
                raise RuntimeError(f"WHIP refused: {resp.status} {body[:200]}")
            self.session_url = str(resp.url.join(URL(resp.headers["Location"])))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
        await asyncio.wait_for(self.channel_open.wait(), HTTP_TIMEOUT_S)
        delay_sacks(pc)
        self._send = _rtp_sender(transceiver, self.audio)

    def send_next(self) -> None:
        """Send the next packet of the looped piece now."""
        if self.closed or self._send is None:
            return
        k = len(self.sent_at)
        try:
            self._send(k)
        except (OSError, AttributeError, ConnectionError):
            self.closed = True
            return
        self.sent_at.append(time.monotonic())

    def _on_message(self, message: str | bytes) -> None:
        now = time.monotonic()
        self.events += 1
        if isinstance(message, str) and '"onset"' in message:
            event = json.loads(message)
            if event.get("type") == "onset":
                self.onsets.append((float(event["t"]), now))

    async def aclose(self, http: aiohttp.ClientSession) -> None:
        self.closed = True
        if self.session_url:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.delete(self.session_url, headers={"Authorization": f"Bearer {self.ticket}"}):
                    pass
        if self.pc is not None:
            await self.pc.close()


def _rtp_sender(transceiver: Any, audio: PreparedAudio) -> Any:
    """A function sending packet ``k`` of the looped piece as aiortc's RTCRtpSender would."""
    sender = transceiver.sender
    dtls = sender.transport
    srtp = dtls._tx_srtp
    pair = dtls.transport._connection._nominated[1]
    udp, addr = pair.protocol.transport, pair.remote_addr
    codec = transceiver._codecs[0]
    ssrc = sender._ssrc
    ext_map = sender._RTCRtpSender__rtp_header_extensions_map
    mid = transceiver.mid
    # The header extensions are fixed per audio level: build each variant once with aiortc's serializer.
    ext_blocks: dict[int, bytes] = {}
    for level in set(audio.levels):
        packet = RtpPacket(payload_type=codec.payloadType, sequence_number=0, timestamp=0, ssrc=ssrc)
        packet.extensions.mid = mid
        packet.extensions.audio_level = (False, level)
        ext_blocks[level] = packet.serialize(ext_map)[12:]
    x_bit = 0x10 if ext_blocks and len(next(iter(ext_blocks.values()))) else 0
    bodies = [ext_blocks[lv] + p for lv, p in zip(audio.levels, audio.packets, strict=True)]
    first_seq = int(np.random.randint(0, 1 << 15))
    ts_origin = int(np.random.randint(0, 1 << 31))
    n = len(bodies)
    pt = codec.payloadType

    def send(k: int) -> None:
        body = bodies[k % n]
        header = _RTP_HEADER.pack(0x80 | x_bit, pt | (0x80 if k == 0 else 0), (first_seq + k) & 0xFFFF,
                                  (ts_origin + k * FRAME_SAMPLES) & 0xFFFFFFFF, ssrc)
        udp.sendto(srtp.protect(header + body), addr)
        sender._RTCRtpSender__packet_count += 1  # for its RTCP sender reports
        sender._RTCRtpSender__octet_count += len(body)

    return send


def delay_sacks(pc: RTCPeerConnection) -> None:
    """Make this peer's SCTP acknowledge DATA like libwebrtc's dcSCTP (see the module docstring)."""
    sctp = pc.sctp
    if sctp is None:
        return
    stock = sctp._send_sack
    loop = asyncio.get_running_loop()
    state: dict[str, Any] = {"packets": 0, "timer": None}

    def flush() -> None:
        state["timer"] = None
        state["packets"] = 0
        if sctp._sack_needed:
            task = loop.create_task(stock())
            state["task"] = task

    async def send_sack() -> None:
        if sctp._sack_misordered or sctp._sack_duplicates:
            state["packets"] = 0
            await stock()
            return
        state["packets"] += 1
        if state["packets"] >= SACK_EVERY_PACKETS:
            state["packets"] = 0
            if state["timer"] is not None:
                state["timer"].cancel()
                state["timer"] = None
            await stock()
        elif state["timer"] is None:
            state["timer"] = loop.call_later(SACK_DELAY_S, flush)

    sctp._send_sack = send_sack  # type: ignore[method-assign]


class Pacer:
    """Sends every registered client's packets on time from one task (see the module docstring)."""

    def __init__(self) -> None:
        self.clients: list[LeanClient] = []
        self.late_s: list[float] = []

    def add(self, client: LeanClient) -> None:
        client.next_due = time.monotonic()
        self.clients.append(client)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            next_tick += SLOT_S
            delay = next_tick - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_tick = loop.time()
            now = time.monotonic()
            for client in self.clients:
                if client.closed:
                    continue
                while client.next_due <= now + SLOT_S / 2:
                    self.late_s.append(now - client.next_due)
                    client.send_next()
                    client.next_due += FRAME_S
