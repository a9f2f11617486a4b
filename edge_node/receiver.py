"""The edge's low-latency audio receive path: Opus RTP payloads in, mono float32 48 kHz out, at once.

Stock aiortc puts inbound audio through a jitter buffer that holds four 20 ms frames (``prefetch=4``)
before decoding, on a decoder thread, then through an asyncio queue: about 80 ms before any analysis.
That buffer exists to smooth *playout*; the edge plays nothing out, it only needs the audio in order.
So this path decodes each packet the moment it is next in RTP-timestamp order, inline in the event
loop (a 20 ms Opus frame decodes in ~40 µs):

- in order (the normal case): decoded immediately; zero added delay;
- a gap (a later packet arrived first): the later packets wait at most ``reorder_window_s`` for the
  missing one; if it comes they are decoded in order, otherwise the gap is concealed and decoding goes
  on, so a lost packet costs one window once, never a standing delay;
- late (its slot was already concealed) or duplicate packets are dropped;
- concealment keeps the time base: the gap is filled with as many samples as the RTP timestamps say
  were lost (the last sample value decaying to silence in 1 ms, then silence), so event times stay
  the performance's time; a jump of more than ``MAX_CONCEAL_S``, or more than the wall time since
  the last decoded packet allows (a hostile client cannot make the edge analyse invented silence faster
  than real time), resynchronises instead.

:func:`install` hooks this path into an aiortc :class:`~aiortc.RTCRtpReceiver` (its RTCP, stats and
SSRC bookkeeping keep running; its jitter buffer is replaced by one that discards, so the stock
decoder thread idles) and returns a :data:`~edge_node.rtc.MediaHandler` for
:func:`edge_node.rtc.tune_sockets`: SRTP datagrams are then unprotected and pushed here straight from
the socket's read callback (the stream statistics behind the receiver's RTCP reports are still fed).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import struct
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np
import pylibsrtp
import structlog
from aiortc import RTCRtpReceiver
from aiortc.rtcrtpreceiver import StreamStatistics

from .audio import SAMPLE_RATE_HZ, MonoResampler

log = structlog.get_logger(__name__)

RTP_CLOCK_HZ = 48_000  # Opus RTP timestamps always count 48 kHz samples (RFC 7587)
DEFAULT_FRAME_SAMPLES = 960
MAX_CONCEAL_S = 2.0  # a larger timestamp jump is a discontinuity, not a loss
CONCEAL_SLACK_S = 0.25  # lost audio may exceed the wall time since the previous packet by this much
MAX_PENDING_PACKETS = 32  # reorder storage bound, whatever the window
CONCEAL_FADE_SAMPLES = 48  # 1 ms
_S16_SCALE = np.float32(1.0 / 32768.0)
_HALF_RANGE = 1 << 31
_FULL_RANGE = 1 << 32
_RTP_FIXED = struct.Struct("!BBHII")
_RTP_EXT_LENGTH = struct.Struct("!H")

OPUS_MAX_FRAME_SAMPLES = 5760  # 120 ms at 48 kHz, the longest Opus packet


def _load_libopus() -> Any:
    """libopus through ctypes: the copy inside PyAV's wheel, else the system's; None if neither."""
    candidates = sorted(Path(av.__file__).parent.parent.glob("av.libs/libopus*.so*"))
    system = ctypes.util.find_library("opus")
    for name in [*map(str, candidates), *([system] if system else [])]:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.opus_decoder_create.restype = ctypes.c_void_p
        lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        lib.opus_decode_float.restype = ctypes.c_int
        lib.opus_decode_float.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32, ctypes.c_void_p,
                                          ctypes.c_int, ctypes.c_int]
        lib.opus_decoder_destroy.restype = None
        lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
        return lib
    return None


_LIBOPUS = _load_libopus()


class OpusDecoder:
    """One mono 48 kHz libopus decoder called directly (ctypes): a third less per 20 ms packet than
    PyAV's codec context (no packet/frame objects, no int16 step), the same library underneath."""

    def __init__(self) -> None:
        if _LIBOPUS is None:
            raise RuntimeError("libopus not found")
        err = ctypes.c_int(0)
        self._state = _LIBOPUS.opus_decoder_create(SAMPLE_RATE_HZ, 1, ctypes.byref(err))
        if err.value != 0 or not self._state:
            raise RuntimeError(f"opus_decoder_create failed ({err.value})")
        self._out = np.zeros(OPUS_MAX_FRAME_SAMPLES, dtype=np.float32)
        self._out_ptr = self._out.ctypes.data
        self._decode = _LIBOPUS.opus_decode_float

    def decode(self, payload: bytes) -> np.ndarray:
        """The samples of one Opus packet (a copy); ValueError when it does not decode."""
        n = self._decode(self._state, payload, len(payload), self._out_ptr, OPUS_MAX_FRAME_SAMPLES, 0)
        if n < 0:
            raise ValueError(f"opus_decode_float error {n}")
        return self._out[:n].copy()

    def close(self) -> None:
        if self._state and _LIBOPUS is not None:
            _LIBOPUS.opus_decoder_destroy(self._state)
            self._state = None

    def __del__(self) -> None:
        self.close()


AudioSink = Callable[[np.ndarray, float], None]
"""Receives decoded mono float32 48 kHz samples and the arrival time (``time.monotonic()``) of the
packet that made them available."""


@dataclass
class ReceiveStats:
    packets: int = 0
    decoded_frames: int = 0
    concealed_samples: int = 0
    concealed_gaps: int = 0
    late_dropped: int = 0
    duplicates: int = 0
    decode_errors: int = 0
    discontinuities: int = 0


class AudioReceivePath:
    """Reorders Opus packets within a small window, decodes them at once, conceals losses."""

    def __init__(
        self,
        sink: AudioSink,
        reorder_window_s: float = 0.02,
        loop: asyncio.AbstractEventLoop | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sink = sink
        self.reorder_window_s = reorder_window_s
        self._loop = loop or asyncio.get_running_loop()
        self._clock = clock
        self._opus = OpusDecoder() if _LIBOPUS is not None else None
        self._decoder: Any = None
        if self._opus is None:  # libopus could not be loaded directly: PyAV's codec context
            self._decoder = av.CodecContext.create("libopus", "r")
            self._decoder.sample_rate = SAMPLE_RATE_HZ
            self._decoder.layout = "mono"
        self._resampler = MonoResampler()
        self._last_raw_ts: int | None = None
        self._last_ext_ts = 0
        self._next_ts: int | None = None
        self._frame_samples = DEFAULT_FRAME_SAMPLES
        self._pending: dict[int, bytes] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._last_sample = 0.0
        self._decoded_at: float | None = None  # arrival time of the audio decoded (or concealed) last
        self._closed = False
        self.stats = ReceiveStats()

    # ------------------------------------------------------------------ input
    def push(self, payload: bytes, rtp_timestamp: int, arrival_s: float | None = None) -> None:
        """One RTP payload (an Opus packet) and its 32-bit RTP timestamp."""
        if self._closed:
            return
        arrival = self._clock() if arrival_s is None else arrival_s
        self.stats.packets += 1
        ts = self._unwrap(rtp_timestamp)
        if self._next_ts is None:
            self._next_ts = ts
        nxt = self._next_ts
        if ts < nxt:
            self.stats.late_dropped += 1
            return
        if ts in self._pending:
            self.stats.duplicates += 1
            return
        gap_s = (ts - nxt) / RTP_CLOCK_HZ
        if gap_s > MAX_CONCEAL_S or (
            self._decoded_at is not None and gap_s > arrival - self._decoded_at + CONCEAL_SLACK_S
        ):
            # The sender jumped (restart, long pause), or claims more lost audio than wall time
            # allows (which would make the edge analyse concealment faster than real time): decode
            # what waits, then follow the new clock.
            self._flush_pending(arrival)
            self.stats.discontinuities += 1
            self._next_ts = ts
            nxt = ts
        if ts == nxt:
            self._decode(payload, arrival)
            self._drain(arrival)
            return
        self._pending[ts] = payload
        if len(self._pending) > MAX_PENDING_PACKETS or self.reorder_window_s <= 0:
            self._flush_pending(arrival)
        elif self._timer is None:
            self._timer = self._loop.call_later(self.reorder_window_s, self._on_window_expired)

    def close(self) -> None:
        """Stop: cancel the reorder timer and drop what waits. Safe to call twice."""
        self._closed = True
        if self._opus is not None:
            self._opus.close()
        self._cancel_timer()
        self._pending.clear()

    @property
    def pending_packets(self) -> int:
        return len(self._pending)

    # --------------------------------------------------------------- internals
    def _unwrap(self, raw: int) -> int:
        if self._last_raw_ts is None:
            self._last_raw_ts = raw
            self._last_ext_ts = raw
            return raw
        diff = (raw - self._last_raw_ts) % _FULL_RANGE
        if diff >= _HALF_RANGE:
            diff -= _FULL_RANGE
        self._last_raw_ts = raw
        self._last_ext_ts += diff
        return self._last_ext_ts

    def _on_window_expired(self) -> None:
        self._timer = None
        if self._closed or not self._pending:
            return
        self._flush_pending(self._clock())

    def _flush_pending(self, arrival: float) -> None:
        """Conceal the gap before the earliest waiting packet, decode it and what follows it."""
        while self._pending:
            first = min(self._pending)
            assert self._next_ts is not None
            if first > self._next_ts:
                self._conceal(first - self._next_ts, arrival)
                self._next_ts = first
            self._drain(arrival)

    def _drain(self, arrival: float) -> None:
        pending = self._pending
        while pending and self._next_ts in pending:
            self._decode(pending.pop(self._next_ts), arrival)  # type: ignore[arg-type]
        if not pending:
            self._cancel_timer()
        elif self._timer is None and not self._closed:
            self._timer = self._loop.call_later(self.reorder_window_s, self._on_window_expired)

    def _decode(self, payload: bytes, arrival: float) -> None:
        assert self._next_ts is not None
        self._decoded_at = arrival
        if self._opus is not None:
            try:
                samples = self._opus.decode(payload)
            except ValueError:
                self.stats.decode_errors += 1
                self._conceal(self._frame_samples, arrival)
                self._next_ts += self._frame_samples
                return
            if samples.size:
                self._frame_samples = samples.size
                self._last_sample = float(samples[-1])
                self.stats.decoded_frames += 1
                self._next_ts += samples.size
                self._sink(samples, arrival)
            else:
                self._next_ts += self._frame_samples
            return
        try:
            frames = self._decoder.decode(av.Packet(payload))
        except (av.error.FFmpegError, ValueError):
            self.stats.decode_errors += 1
            self._conceal(self._frame_samples, arrival)
            self._next_ts += self._frame_samples
            return
        produced = 0
        for frame in frames:
            produced += frame.samples
            samples = self._to_mono_float(frame)
            if samples.size:
                self._last_sample = float(samples[-1])
                self.stats.decoded_frames += 1
                self._sink(samples, arrival)
        if produced:
            self._frame_samples = produced
        self._next_ts += produced or self._frame_samples

    def _to_mono_float(self, frame: av.AudioFrame) -> np.ndarray:
        # libopus decodes to packed s16 at 48 kHz, mono as requested: scale it directly (a tenth of
        # libswresample's cost per 20 ms frame); anything else goes through the resampler.
        if frame.format.name == "s16" and frame.layout.nb_channels == 1 and frame.sample_rate == SAMPLE_RATE_HZ:
            pcm = np.frombuffer(memoryview(frame.planes[0]), dtype=np.int16, count=frame.samples)
            return pcm.astype(np.float32) * _S16_SCALE
        return self._resampler.convert(frame)

    def _conceal(self, n_samples: int, arrival: float) -> None:
        if n_samples <= 0:
            return
        self._decoded_at = arrival
        fill = np.zeros(n_samples, dtype=np.float32)
        k = min(CONCEAL_FADE_SAMPLES, n_samples)
        fill[:k] = self._last_sample * np.linspace(1.0, 0.0, k, endpoint=False, dtype=np.float32)
        self._last_sample = 0.0
        self.stats.concealed_samples += n_samples
        self.stats.concealed_gaps += 1
        self._sink(fill, arrival)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _DiscardingJitterBuffer:
    """Takes the place of aiortc's audio jitter buffer: keeps nothing, so nothing is decoded twice."""

    capacity = 16

    def add(self, packet: Any) -> tuple[bool, None]:
        return False, None


class _RtpSeen:
    """What aiortc's receive statistics read of an RTP packet."""

    __slots__ = ("sequence_number", "timestamp")

    def __init__(self, sequence_number: int, timestamp: int) -> None:
        self.sequence_number = sequence_number
        self.timestamp = timestamp


def install(
    receiver: RTCRtpReceiver, path: AudioReceivePath, payload_types: Collection[int]
) -> tuple[Callable[[], None], Callable[[bytes], bool]]:
    """Route ``receiver``'s packets of the given (Opus) payload types into ``path``.

    Returns a function that undoes the hook (drops the references it added), for teardown, and the
    socket-level media handler (see the module docstring) to give :func:`edge_node.rtc.tune_sockets`.
    """
    pts = frozenset(payload_types)
    stock = receiver._handle_rtp_packet
    receiver._RTCRtpReceiver__jitter_buffer = _DiscardingJitterBuffer()  # type: ignore[attr-defined]
    dtls: Any = receiver.transport
    streams: dict[int, StreamStatistics] = receiver._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
    clock = time.monotonic

    async def handle_rtp_packet(packet: Any, arrival_time_ms: int) -> None:
        if packet.payload_type in pts and packet.payload:
            try:
                path.push(packet.payload, packet.timestamp)
            except Exception:  # never let one session's audio kill the transport's receive loop
                path.stats.decode_errors += 1
                log.exception("receive path failed on a packet")
        await stock(packet, arrival_time_ms)

    def handle_srtp(data: bytes) -> bool:
        srtp = dtls._rx_srtp
        if srtp is None or path._closed:
            return False
        arrival = clock()
        try:
            plain = srtp.unprotect(data)
        except pylibsrtp.Error:
            return True  # aiortc drops these too (replayed, forged, not for this session)
        dtls._RTCDtlsTransport__rx_bytes += len(data)
        dtls._RTCDtlsTransport__rx_packets += 1
        size = len(plain)
        if size < 12:
            return True
        first, second, seq, ts, ssrc = _RTP_FIXED.unpack_from(plain)
        start = 12 + 4 * (first & 0x0F)
        if first & 0x10:  # header extension
            if size < start + 4:
                return True
            start += 4 + 4 * _RTP_EXT_LENGTH.unpack_from(plain, start + 2)[0]
        end = size - plain[-1] if first & 0x20 else size  # padding
        if end <= start:
            return True
        stats = streams.get(ssrc)
        if stats is None:
            stats = streams[ssrc] = StreamStatistics(RTP_CLOCK_HZ)
        stats.add(_RtpSeen(seq, ts))  # type: ignore[arg-type]
        if second & 0x7F in pts:
            try:
                path.push(plain[start:end], ts, arrival)
            except Exception:  # one session's audio must never break the socket's read loop
                path.stats.decode_errors += 1
                log.exception("receive path failed on a packet")
        return True

    receiver._handle_rtp_packet = handle_rtp_packet  # type: ignore[method-assign]

    def uninstall() -> None:
        receiver.__dict__.pop("_handle_rtp_packet", None)

    return uninstall, handle_srtp
