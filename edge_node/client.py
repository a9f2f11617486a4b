"""A Python practice client: streams an audio file to an edge in real time, as the app would.

It makes a WHIP offer with a ``feedback`` data channel created before the offer, sends the file's
audio as Opus in 20 ms frames paced by the wall clock (:class:`FileAudioTrack`), and records every
message the edge sends with its receive time. Tests and benchmarks use the send and receive times:
``track.sent_at[k]`` is when frame ``k`` (samples ``k*960 .. k*960+959`` of the file) was handed to the
encoder, ``ReceivedEvent.received_at`` when an event arrived (both ``time.monotonic()``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import functools
import itertools
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import aiohttp
import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from .audio import CHUNK_SAMPLES, SAMPLE_RATE_HZ, iter_file_chunks
from .errors import AudioInputError, WhipRefused
from .events import Event
from .rtc import tune_sockets

FRAME_S = CHUNK_SAMPLES / SAMPLE_RATE_HZ
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE_HZ)
HTTP_TIMEOUT_S = 15.0
OPUS_BITRATE_BPS = 64_000


@dataclass(frozen=True)
class ReceivedEvent:
    event: Event
    received_at: float


def _opus_encoder() -> av.audio.codeccontext.AudioCodecContext:
    encoder = av.CodecContext.create("libopus", "w")
    encoder.bit_rate = OPUS_BITRATE_BPS
    encoder.format = "s16"
    encoder.layout = "mono"
    encoder.sample_rate = SAMPLE_RATE_HZ
    encoder.time_base = TIME_BASE
    encoder.options = {"application": "audio"}
    return encoder  # type: ignore[return-value]


def encode_opus(chunks: Iterable[np.ndarray], tail_frames: int) -> list[bytes]:
    """20 ms Opus packets of the audio (padded to whole frames) followed by ``tail_frames`` of silence."""
    encoder = _opus_encoder()
    packets: list[bytes] = []
    silence = np.zeros(CHUNK_SAMPLES, dtype=np.float32)
    for i, chunk in enumerate(itertools.chain(chunks, itertools.repeat(silence, tail_frames))):
        if chunk.size < CHUNK_SAMPLES:
            chunk = np.concatenate([chunk, np.zeros(CHUNK_SAMPLES - chunk.size, np.float32)])
        pcm = np.clip(np.round(chunk * 32767.0), -32768, 32767).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE_HZ
        frame.pts = i * CHUNK_SAMPLES
        out = encoder.encode(frame)
        if len(out) != 1:
            raise AudioInputError("opus", f"encoder returned {len(out)} packets for one 20 ms frame")
        packets.append(bytes(out[0]))
    return packets


@functools.lru_cache(maxsize=8)
def _encoded_file(path: str, tail_frames: int) -> tuple[bytes, ...]:
    return tuple(encode_opus(iter_file_chunks(path), tail_frames))


class FileAudioTrack(MediaStreamTrack):
    """Audio of a file (or of given samples) in real time, then silence until stopped.

    The audio is Opus-encoded before streaming starts (libopus, 20 ms frames, cached per file) and
    each packet is handed to aiortc at its wall-clock time, as a phone app's encoder hands over each
    frame as it is captured. Encoding ahead keeps a many-session benchmark from measuring its own
    client: aiortc encoding raw frames costs a thread-pool hop and a pure-Python audio-level pass per
    frame. ``finished`` is set when the last frame of the audio plus ``tail_s`` of silence has been
    sent; after that the track sends silence until it is stopped.
    """

    kind = "audio"

    def __init__(
        self, source: str | Path | np.ndarray, tail_s: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        tail_frames = round(tail_s / FRAME_S)
        if isinstance(source, np.ndarray):
            samples = np.asarray(source, dtype=np.float32).reshape(-1)
            chunks = (samples[i : i + CHUNK_SAMPLES] for i in range(0, samples.size, CHUNK_SAMPLES))
            self._packets: Sequence[bytes] = encode_opus(chunks, tail_frames)
        else:
            self._packets = _encoded_file(str(source), tail_frames)
        self._silence = _encoded_silence()
        self._clock = clock
        self._start: float | None = None
        self._index = 0
        self.sent_at: list[float] = []
        self.finished = asyncio.Event()
        self.gate: asyncio.Event | None = None  # when set, audio starts only once this is set

    @property
    def started_at(self) -> float | None:
        return self._start

    async def recv(self) -> av.Packet:  # type: ignore[override]
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None and self.gate is not None:
            await self.gate.wait()
        now = self._clock()
        if self._start is None:
            self._start = now
        else:
            wait = self._start + self._index * FRAME_S - now
            if wait > 0:
                await asyncio.sleep(wait)
        i = self._index
        packet = av.Packet(self._packets[i] if i < len(self._packets) else self._silence)
        packet.pts = i * CHUNK_SAMPLES  # RTP timestamps step 960 per frame
        packet.time_base = TIME_BASE
        self.sent_at.append(self._clock())
        self._index += 1
        if self._index >= len(self._packets):
            self.finished.set()
        return packet


@functools.lru_cache(maxsize=1)
def _encoded_silence() -> bytes:
    return encode_opus([np.zeros(CHUNK_SAMPLES, np.float32)] * 3, 0)[-1]


class PracticeClient:
    """One practice session from the client side: WHIP offer, Opus up, feedback events down."""

    def __init__(
        self,
        whip_url: str,
        ticket: str,
        track: MediaStreamTrack,
        on_event: Callable[[ReceivedEvent], None] | None = None,
    ) -> None:
        self.whip_url = whip_url
        self.ticket = ticket
        self.track = track
        self.on_event = on_event
        self.events: list[ReceivedEvent] = []
        self.replies: list[ReceivedEvent] = []
        self.session_url: str | None = None
        self.pc: RTCPeerConnection | None = None
        self.channel: RTCDataChannel | None = None
        self.channel_open = asyncio.Event()
        self.channel_closed = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None
        self._state = "new"
        self._waiters: list[tuple[Callable[[Event], bool], asyncio.Future[Event]]] = []

    async def __aenter__(self) -> PracticeClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Offer, POST it to the edge, apply the answer. Raises :class:`WhipRefused` when refused."""
        if self._state != "new":
            raise RuntimeError(f"client cannot start: it is {self._state}")
        self._state = "starting"
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S))
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        channel = self.channel = pc.createDataChannel("feedback")
        channel.on("open", self.channel_open.set)
        channel.on("close", self.channel_closed.set)
        channel.on("message", self._on_message)
        if isinstance(self.track, FileAudioTrack) and self.track.gate is None:
            # Like the app: the student starts playing once feedback can flow.
            self.track.gate = self.channel_open
        pc.addTransceiver(self.track, direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        tune_sockets(pc)
        assert pc.localDescription is not None
        async with self._http.post(
            self.whip_url, data=pc.localDescription.sdp,
            headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {self.ticket}"},
        ) as resp:
            body = await resp.text()
            if resp.status != 201:
                raise _refusal(resp.status, body)
            location = resp.headers.get("Location")
        if not location:
            raise WhipRefused(201, "no_location", "edge answered without a Location header")
        self.session_url = urljoin(self.whip_url, location)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
        self._state = "running"

    async def send_control(self, message: dict[str, Any] | str | bytes) -> None:
        """Send a control message (a dict is sent as JSON). Raises ConnectionError once the channel
        is closed."""
        if not self.channel_open.is_set():
            await asyncio.wait_for(self.channel_open.wait(), HTTP_TIMEOUT_S)
        if self.channel is None or self.channel.readyState != "open":
            raise ConnectionError("feedback channel is closed")
        self.channel.send(message if isinstance(message, str | bytes) else json.dumps(message))

    async def wait_for(self, predicate: Callable[[Event], bool], timeout_s: float) -> Event:
        """The first message (received already or later) for which ``predicate`` is true."""
        for rec in (*self.events, *self.replies):
            if predicate(rec.event):
                return rec.event
        fut: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        entry = (predicate, fut)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(fut, timeout_s)
        finally:
            self._waiters.remove(entry)

    async def stream(self, stop: bool = True, timeout_s: float | None = None) -> list[ReceivedEvent]:
        """Wait until a :class:`FileAudioTrack` has sent everything, then (``stop``) ask the edge to
        finish and wait for its channel to close. Returns the feedback events received."""
        if not isinstance(self.track, FileAudioTrack):
            raise TypeError("stream() needs a FileAudioTrack")
        await asyncio.wait_for(self.track.finished.wait(), timeout_s)
        if stop:
            await self.send_control({"type": "stop"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.channel_closed.wait(), 5.0)
        return self.events

    async def aclose(self, delete: bool = True) -> None:
        """End the session: DELETE it on the edge (unless ``delete`` is false: an abrupt end), close
        the peer. Safe twice."""
        if self._state == "closed":
            return
        self._state = "closed"
        try:
            if delete and self.session_url and self._http is not None:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with self._http.delete(
                        self.session_url, headers={"Authorization": f"Bearer {self.ticket}"}
                    ):
                        pass
        finally:
            self.track.stop()
            if self.pc is not None:
                await self.pc.close()
            if self._http is not None:
                await self._http.close()
            for _, fut in self._waiters:
                fut.cancel()

    def _on_message(self, message: str | bytes) -> None:
        received_at = time.monotonic()
        try:
            event = json.loads(message)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        rec = ReceivedEvent(event, received_at)
        (self.events if "seq" in event else self.replies).append(rec)
        if self.on_event is not None:
            self.on_event(rec)
        for predicate, fut in self._waiters:
            if not fut.done() and predicate(event):
                fut.set_result(event)


def _refusal(status: int, body: str) -> WhipRefused:
    try:
        data = json.loads(body)
        return WhipRefused(status, str(data["error"]), str(data["message"]))
    except (ValueError, KeyError, TypeError):
        return WhipRefused(status, "http", body.strip()[:200] or f"HTTP {status}")


async def fetch_dev_ticket(base_url: str, **claims: Any) -> dict[str, Any]:
    """A ticket from an edge's ``POST /v1/dev/ticket`` (standalone edge with dev tickets on)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)) as http, \
            http.post(urljoin(base_url, "/v1/dev/ticket"), json=claims) as resp:
        body = await resp.text()
        if resp.status != 200:
            raise _refusal(resp.status, body)
        data: dict[str, Any] = json.loads(body)
        return data
