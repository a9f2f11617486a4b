"""The low-latency receive path with real Opus packets: decoded the moment they are next in order,
reordered within the window, losses concealed without shifting the time base."""

from __future__ import annotations

import asyncio
import fractions

import av
import numpy as np

from edge_node.receiver import AudioReceivePath

FRAME = 960


def opus_packets(n_frames: int, freq_hz: float = 440.0) -> list[tuple[bytes, int]]:
    """(payload, RTP timestamp) of a sine encoded as 20 ms Opus frames, as an aiortc sender makes."""
    enc = av.CodecContext.create("libopus", "w")
    enc.bit_rate = 64000
    enc.format = "s16"
    enc.layout = "mono"
    enc.sample_rate = 48000
    enc.time_base = fractions.Fraction(1, 48000)
    t = np.arange(n_frames * FRAME) / 48000
    pcm = (np.sin(2 * np.pi * freq_hz * t) * 12000).astype(np.int16)
    packets = []
    for i in range(n_frames):
        frame = av.AudioFrame.from_ndarray(pcm[i * FRAME : (i + 1) * FRAME].reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = i * FRAME
        packets += [bytes(p) for p in enc.encode(frame)]
    base = 4_000_000_000  # close to the 32-bit wrap
    return [(p, (base + i * FRAME) % (1 << 32)) for i, p in enumerate(packets)]


class Sink:
    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []

    def __call__(self, samples: np.ndarray, arrival: float) -> None:
        self.chunks.append(samples)

    @property
    def samples(self) -> int:
        return sum(c.size for c in self.chunks)


async def test_in_order_packets_are_decoded_immediately_across_timestamp_wrap() -> None:
    sink = Sink()
    path = AudioReceivePath(sink, reorder_window_s=0.02)
    packets = opus_packets(100)
    for i, (payload, ts) in enumerate(packets):
        path.push(payload, ts)
        assert sink.samples == (i + 1) * FRAME, "no packet waits when nothing is missing"
    assert path.stats.concealed_samples == 0 and path.pending_packets == 0
    path.close()


async def test_swapped_packets_are_reordered_without_loss() -> None:
    sink = Sink()
    path = AudioReceivePath(sink, reorder_window_s=0.05)
    packets = opus_packets(10)
    order = [0, 1, 3, 2, 4, 6, 5, 7, 8, 9]
    for i in order:
        path.push(*packets[i])
    assert sink.samples == 10 * FRAME
    assert path.stats.concealed_samples == 0 and path.stats.late_dropped == 0

    reference = Sink()
    ref_path = AudioReceivePath(reference, reorder_window_s=0.05)
    for p in packets:
        ref_path.push(*p)
    np.testing.assert_allclose(np.concatenate(sink.chunks), np.concatenate(reference.chunks), atol=1e-6)
    path.close()
    ref_path.close()


async def test_a_lost_packet_is_concealed_after_the_window_keeping_the_time_base() -> None:
    sink = Sink()
    path = AudioReceivePath(sink, reorder_window_s=0.02)
    packets = opus_packets(10)
    for i in (0, 1, 2, 4, 5):
        path.push(*packets[i])
    assert sink.samples == 3 * FRAME, "packets after the gap wait for the missing one"
    await asyncio.sleep(0.06)
    assert sink.samples == 6 * FRAME, "after the window the gap is filled and the rest decoded"
    assert path.stats.concealed_samples == FRAME and path.stats.concealed_gaps == 1
    path.push(*packets[3])  # arrives too late: its slot is already concealed
    assert path.stats.late_dropped == 1
    for i in range(6, 10):
        path.push(*packets[i])
    assert sink.samples == 10 * FRAME
    path.close()


async def test_duplicates_are_dropped_and_a_large_jump_resynchronises() -> None:
    sink = Sink()
    path = AudioReceivePath(sink, reorder_window_s=0.02)
    packets = opus_packets(6)
    for p in packets[:3]:
        path.push(*p)
    path.push(*packets[2])
    assert path.stats.late_dropped == 1  # a duplicate of a decoded packet is "late"
    payload, ts = packets[3]
    path.push(payload, (ts + 48000 * 60) % (1 << 32))  # the sender's clock jumped a minute
    assert path.stats.discontinuities == 1
    assert sink.samples == 4 * FRAME, "no minute of silence is invented"
    path.close()
    path.close()


async def test_corrupt_payload_is_concealed_not_raised() -> None:
    sink = Sink()
    path = AudioReceivePath(sink, reorder_window_s=0.02)
    packets = opus_packets(3)
    path.push(*packets[0])
    path.push(b"\xff" * 3, packets[1][1])
    path.push(*packets[2])
    assert sink.samples == 3 * FRAME
    path.close()


async def test_timestamp_jumps_faster_than_wall_time_are_not_concealed() -> None:
    """A client whose timestamps leap 1.5 s per 20 ms packet must not make the edge analyse 75x real
    time of invented silence: such jumps resynchronise instead."""
    now = [0.0]
    sink = Sink()
    path = AudioReceivePath(sink, reorder_window_s=0.02, clock=lambda: now[0])
    packets = opus_packets(20)
    for i, (payload, ts) in enumerate(packets):
        now[0] = i * 0.02
        path.push(payload, (ts + i * 72_000) % (1 << 32))
    assert path.stats.concealed_samples == 0
    assert path.stats.discontinuities == 19
    assert sink.samples == 20 * FRAME


async def test_a_real_outage_is_concealed_for_its_wall_time() -> None:
    now = [0.0]
    sink = Sink()
    path = AudioReceivePath(sink, reorder_window_s=0.02, clock=lambda: now[0])
    packets = opus_packets(60)
    for i in list(range(10)) + list(range(35, 60)):  # packets 10..34 (0.5 s) lost in an outage
        now[0] = i * 0.02
        path.push(*packets[i])
    await asyncio.sleep(0.06)  # the reorder window passes: the gap is given up and concealed
    assert path.stats.discontinuities == 0
    assert path.stats.concealed_samples == 25 * FRAME
    assert sink.samples == 60 * FRAME
    path.close()
