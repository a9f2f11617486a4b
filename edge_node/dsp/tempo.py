"""Tempo from the onset stream: BPM in [40, 200] with octave-error handling.

Two stages. (1) The recent onsets (times and accent weights) become a smoothed pulse train whose
autocorrelation, scored with a comb over the first multiples of each period, gives a periodicity
``P0``. (2) The metrical level is then chosen among ``P0`` times 1/3, 1/2, 2/3, 1, 3/2, 2, 3 by how
well a beat grid of that period (at its best phase) explains the playing: ``coverage`` (share of the
accent weight that falls on the grid) times ``fill ** FILL_EXPONENT`` (share of grid points that
have an onset). A subdivision covers everything but leaves grid points empty; a bar-level period
is always filled but covers little. No prior towards 120 BPM is used: that prior is why common
trackers report 60-80 BPM pieces at double tempo.
"""

from __future__ import annotations

import numpy as np

MIN_BPM = 40.0
MAX_BPM = 200.0
RATE_HZ = 200.0  # pulse-train sample rate
SMOOTH_S = 0.015  # Gaussian smoothing of each onset pulse
WINDOW_S = 12.0  # onsets considered
MIN_ONSETS = 5
GRID_SIGMA_S = 0.025  # how far from a grid point an onset still counts as on it
PHASE_STEP_S = 0.01
FILL_EXPONENT = 2.0
METRICAL_RATIOS = (1 / 3, 1 / 2, 2 / 3, 1.0, 3 / 2, 2.0, 3.0)


def estimate_tempo(times: np.ndarray, weights: np.ndarray, now_s: float) -> tuple[float, float]:
    """(bpm, confidence in [0, 1]) from onsets before ``now_s``; (0, 0) if there are too few."""
    keep = times > now_s - WINDOW_S
    times = times[keep]
    weights = weights[keep]
    if times.size < MIN_ONSETS:
        return 0.0, 0.0
    p0 = periodicity(times, weights, now_s)
    if p0 <= 0:
        return 0.0, 0.0
    best_score, best_period = -1.0, p0
    for ratio in METRICAL_RATIOS:
        period = p0 * ratio
        if not 60.0 / MAX_BPM * 0.97 <= period <= 60.0 / MIN_BPM * 1.03:
            continue
        coverage, fill = grid_fit(times, weights, period)
        score = coverage * fill**FILL_EXPONENT
        if score > best_score:
            best_score, best_period = score, period
    bpm = float(np.clip(60.0 / best_period, MIN_BPM, MAX_BPM))
    return bpm, float(np.clip(best_score, 0.0, 1.0))


def grid_fit(times: np.ndarray, weights: np.ndarray, period: float) -> tuple[float, float]:
    """(coverage, fill) of the best-phased beat grid of ``period`` seconds over the onsets."""
    phases = np.arange(0.0, period, PHASE_STEP_S)
    d = np.mod(times[None, :] - phases[:, None], period)
    d = np.minimum(d, period - d)
    near = np.exp(-0.5 * (d / GRID_SIGMA_S) ** 2)  # phases x onsets
    coverage = near @ weights / weights.sum()
    # fill: for each phase, the share of grid points within the onsets' span that have an onset
    k0 = np.ceil((times[0] - phases) / period)
    k1 = np.floor((times[-1] - phases) / period)
    n_grid = np.maximum(k1 - k0 + 1, 1.0)
    # each onset near the grid fills its nearest grid point; onsets are sorted, so distinct grid
    # points are counted where the nearest grid index changes from the previous onset
    k_near = np.round((times[None, :] - phases[:, None]) / period)
    hit = near > 0.5
    new_point = np.ones_like(hit)
    new_point[:, 1:] = (k_near[:, 1:] != k_near[:, :-1]) | ~hit[:, :-1]
    fill = (hit & new_point).sum(axis=1) / n_grid
    score = coverage * np.minimum(fill, 1.0) ** FILL_EXPONENT
    j = int(np.argmax(score))
    return float(coverage[j]), float(min(fill[j], 1.0))


def periodicity(times: np.ndarray, weights: np.ndarray, now_s: float) -> float:
    """Strongest beat-range period (seconds) of the weighted onset pulse train, 0 if none."""
    start = times[0]
    n = int((now_s - start) * RATE_HZ) + 1
    if n < int(1.5 * 60.0 / MAX_BPM * RATE_HZ):
        return 0.0
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
        return 0.0
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
    return float(period / RATE_HZ)
