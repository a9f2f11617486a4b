"""Tempo from the onset stream: BPM in [40, 200] with octave-error handling.

The recent onsets (times and accent weights) are turned into a smoothed pulse train, whose
autocorrelation is scored for every candidate beat period with a comb over its first multiples
(a beat is confirmed by the bar-level periodicities above it). Octave errors are resolved between
the best period and its half/double by which of them the accents support, not by a prior towards
120 BPM: that prior is why common trackers report 60-80 BPM pieces at double tempo.
"""

from __future__ import annotations

import numpy as np

MIN_BPM = 40.0
MAX_BPM = 200.0
RATE_HZ = 200.0  # pulse-train sample rate
SMOOTH_S = 0.015  # Gaussian smoothing of each onset pulse
WINDOW_S = 12.0  # onsets considered
MIN_ONSETS = 5


def estimate_tempo(times: np.ndarray, weights: np.ndarray, now_s: float) -> tuple[float, float]:
    """(bpm, confidence in [0, 1]) from onsets before ``now_s``; (0, 0) if there are too few."""
    keep = times > now_s - WINDOW_S
    times = times[keep]
    weights = weights[keep]
    if times.size < MIN_ONSETS:
        return 0.0, 0.0
    start = times[0]
    n = int((now_s - start) * RATE_HZ) + 1
    if n < int(1.5 * 60.0 / MAX_BPM * RATE_HZ):
        return 0.0, 0.0
    pulses = np.zeros(n, dtype=np.float64)
    idx = np.clip(((times - start) * RATE_HZ).astype(np.int64), 0, n - 1)
    np.add.at(pulses, idx, weights)
    sigma = SMOOTH_S * RATE_HZ
    half = int(4 * sigma)
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    signal = np.convolve(pulses, kernel, mode="same")
    size = 1 << int(np.ceil(np.log2(2 * n)))
    spec = np.fft.rfft(signal, size)
    acf = np.fft.irfft(spec * np.conj(spec), size)[:n]
    if acf[0] <= 0:
        return 0.0, 0.0
    acf = acf / acf[0]
    # candidate beat periods (in samples), scored with a comb over multiples of the period
    lo = int(np.floor(60.0 / MAX_BPM * RATE_HZ * 0.97))
    hi = int(np.ceil(60.0 / MIN_BPM * RATE_HZ * 1.03))
    periods = np.arange(lo, hi + 1, dtype=np.float64)
    score = np.zeros(periods.size)
    for k, w in ((1, 1.0), (2, 0.6), (3, 0.35), (4, 0.5)):
        lags = periods * k
        valid = lags < n - 1
        vals = np.zeros(periods.size)
        vals[valid] = np.interp(lags[valid], np.arange(n), acf)
        score += w * vals
    best = int(np.argmax(score))
    period = periods[best]
    # parabolic refinement of the period
    if 0 < best < score.size - 1:
        y0, y1, y2 = score[best - 1], score[best], score[best + 1]
        den = y0 - 2 * y1 + y2
        if den < 0:
            period += 0.5 * (y0 - y2) / den
    bpm = 60.0 * RATE_HZ / period
    while bpm > MAX_BPM:
        bpm /= 2.0
    while bpm < MIN_BPM:
        bpm *= 2.0
    confidence = float(np.clip(score[best] / (1.0 + 0.6 + 0.35 + 0.5), 0.0, 1.0))
    return float(bpm), confidence
