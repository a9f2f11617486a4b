"""Numba feature front end of the transcription model: log-frequency power frames, one per 20 ms.

Each frame is the power spectrum of a Hann window of ``WINDOW_SAMPLES`` that *ends* at the frame's
hop boundary (causal: frame ``i`` sees audio up to sample ``(i + 1) * HOP_SAMPLES``), pooled by
triangular filters spaced half a semitone apart from MIDI ``LOWEST_BIN_MIDI`` upwards, then
log-compressed. The streaming :class:`FeatureStream` and the offline :func:`features_of` share one
kernel, so a model trained on offline features sees exactly what a live session computes.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
import rocket_fft  # noqa: F401  (registers np.fft for numba)

SAMPLE_RATE_HZ = 48_000
HOP_SAMPLES = 960  # 20 ms: one frame per pipeline chunk
HOP_S = HOP_SAMPLES / SAMPLE_RATE_HZ
WINDOW_SAMPLES = 4096  # 85 ms: resolves the bass register well enough, still short for onsets
BINS_PER_SEMITONE = 2
LOWEST_BIN_MIDI = 21.0  # A0
N_BINS = 192  # MIDI 21 .. 116.5: the 88 keys plus room for the upper harmonics of the top octave
POWER_FLOOR = 1e-10  # -100 dBFS: silence and digital zero map to a finite floor
WINDOW_LATENCY_S = WINDOW_SAMPLES / SAMPLE_RATE_HZ


def bin_centres_hz() -> np.ndarray:
    """Centre frequency of each feature bin (Hz)."""
    midi = LOWEST_BIN_MIDI + np.arange(N_BINS) / BINS_PER_SEMITONE
    return np.asarray(440.0 * 2.0 ** ((midi - 69.0) / 12.0))


def filterbank() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse triangular filters over the rFFT bins: ``(start, stop, weights_flat)``.

    Filter ``k`` covers rFFT bins ``start[k]:stop[k]``; its weights are a slice of ``weights_flat``
    at offset ``sum(stop[:k] - start[:k])`` and sum to one. Where half a semitone is narrower than
    the FFT bin spacing (the bass), the triangle is widened to one bin spacing each side, so every
    filter reads the spectrum near its centre instead of reading nothing.
    """
    df = SAMPLE_RATE_HZ / WINDOW_SAMPLES
    centres = bin_centres_hz()
    ratio = 2.0 ** (1.0 / (12.0 * BINS_PER_SEMITONE))
    freqs = np.arange(WINDOW_SAMPLES // 2 + 1) * df
    starts = np.zeros(N_BINS, dtype=np.int64)
    stops = np.zeros(N_BINS, dtype=np.int64)
    weights: list[np.ndarray] = []
    for k, c in enumerate(centres):
        lo = c - max(c - c / ratio, df)
        hi = c + max(c * ratio - c, df)
        tri = np.where(freqs <= c, (freqs - lo) / (c - lo), (hi - freqs) / (hi - c))
        tri = np.clip(tri, 0.0, None)
        nz = np.nonzero(tri > 0)[0]
        starts[k], stops[k] = nz[0], nz[-1] + 1
        w = tri[starts[k] : stops[k]]
        weights.append(w / w.sum())
    return starts, stops, np.concatenate(weights).astype(np.float64)


_STARTS, _STOPS, _WEIGHTS = filterbank()
_HANN = np.hanning(WINDOW_SAMPLES + 1)[:-1].astype(np.float64)
_AMP_SCALE = 2.0 / float(_HANN.sum())  # a full-scale sine reads about 1.0 in amplitude


@nb.njit(cache=True, fastmath=True)
def _frame(buf: np.ndarray, hann: np.ndarray, starts: np.ndarray, stops: np.ndarray,
           weights: np.ndarray, amp_scale: float, out: np.ndarray) -> None:
    """One feature frame (log10 power per bin) from the window ``buf``."""
    spec = np.fft.rfft(buf * hann)
    off = 0
    for k in range(starts.shape[0]):
        acc = 0.0
        for j in range(starts[k], stops[k]):
            re = spec[j].real * amp_scale
            im = spec[j].imag * amp_scale
            acc += weights[off + j - starts[k]] * (re * re + im * im)
        off += stops[k] - starts[k]
        out[k] = math.log10(acc + 1e-10)


@nb.njit(cache=True)
def _advance(buf: np.ndarray, samples: np.ndarray, hop: int, hann: np.ndarray, starts: np.ndarray,
             stops: np.ndarray, weights: np.ndarray, amp_scale: float, out: np.ndarray) -> None:
    """Shift ``len(samples) // hop`` hops into ``buf``, writing one frame per hop into ``out``."""
    n = samples.shape[0] // hop
    w = buf.shape[0]
    for i in range(n):
        buf[: w - hop] = buf[hop:]
        for j in range(hop):
            v = samples[i * hop + j]
            if not math.isfinite(v):
                v = 0.0
            buf[w - hop + j] = v
        _frame(buf, hann, starts, stops, weights, amp_scale, out[i])


class FeatureStream:
    """The feature front end of one stream: feed samples in order, get the frames they complete."""

    def __init__(self) -> None:
        self._buf = np.zeros(WINDOW_SAMPLES, dtype=np.float64)
        self._rest = np.zeros(0, dtype=np.float64)
        self.frames_out = 0

    def reset(self) -> None:
        """Forget all audio (used when the stream has a gap)."""
        self._buf[:] = 0.0
        self._rest = np.zeros(0, dtype=np.float64)
        self.frames_out = 0

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Consume ``samples`` (mono, 48 kHz); returns the ``(n, N_BINS)`` float32 frames completed."""
        x = np.asarray(samples, dtype=np.float64).reshape(-1)
        if self._rest.size:
            x = np.concatenate([self._rest, x])
        n = x.shape[0] // HOP_SAMPLES
        out = np.empty((n, N_BINS), dtype=np.float64)
        if n:
            _advance(self._buf, x[: n * HOP_SAMPLES], HOP_SAMPLES, _HANN, _STARTS, _STOPS, _WEIGHTS,
                     _AMP_SCALE, out)
        self._rest = x[n * HOP_SAMPLES :].copy()
        self.frames_out += n
        return out.astype(np.float32)


def features_of(audio: np.ndarray) -> np.ndarray:
    """Offline features of a whole signal: identical to streaming it through :class:`FeatureStream`."""
    return FeatureStream().push(audio)
