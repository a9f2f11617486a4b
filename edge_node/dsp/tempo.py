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
from numba import njit

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
    return _grid_fit(times.astype(np.float64), weights.astype(np.float64), period,
                     PHASE_STEP_S, GRID_SIGMA_S, FILL_EXPONENT)


@njit(cache=True, nogil=True)
def _grid_fit(times: np.ndarray, weights: np.ndarray, period: float, phase_step: float,
              sigma: float, fill_exponent: float) -> tuple[float, float]:
    total_w = 0.0
    for j in range(times.size):
        total_w += weights[j]
    best_score, best_cov, best_fill = -1.0, 0.0, 0.0
    n_phases = int(np.ceil(period / phase_step))
    for i in range(n_phases):
        phase = i * phase_step
        cov = 0.0
        hits = 0
        prev_k = -1e18
        prev_hit = False
        for j in range(times.size):
            rel = times[j] - phase
            d = rel - np.floor(rel / period) * period
            if period - d < d:
                d = period - d
            g = np.exp(-0.5 * (d / sigma) ** 2)
            cov += weights[j] * g
            # each onset near the grid fills its nearest grid point; onsets are sorted, so a new
            # grid point is one whose index differs from the previous onset's
            k = np.floor(rel / period + 0.5)
            hit = g > 0.5
            if hit and (k != prev_k or not prev_hit):
                hits += 1
            prev_k = k
            prev_hit = hit
        n_grid = np.floor((times[-1] - phase) / period) - np.ceil((times[0] - phase) / period) + 1.0
        fill = min(1.0, hits / max(n_grid, 1.0))
        coverage = cov / total_w if total_w > 0 else 0.0
        score = coverage * fill**fill_exponent
        if score > best_score:
            best_score, best_cov, best_fill = score, coverage, fill
    return best_cov, best_fill


def periodicity(times: np.ndarray, weights: np.ndarray, now_s: float) -> float:
    """Strongest beat-range period (seconds) of the weighted onset pulse train, 0 if none."""
    return _periodicity(times.astype(np.float64), weights.astype(np.float64), now_s)


COMB = np.array([1.0, 0.6, 0.35, 0.5])  # weights of the period's 1st..4th multiples


@njit(cache=True, nogil=True)
def _periodicity(times: np.ndarray, weights: np.ndarray, now_s: float) -> float:
    start = times[0]
    n = int((now_s - start) * RATE_HZ) + 1
    if n < int(1.5 * 60.0 / MAX_BPM * RATE_HZ):
        return 0.0
    # pulse train: a Gaussian of height w at each onset
    sigma = SMOOTH_S * RATE_HZ
    half = int(4 * sigma)
    signal = np.zeros(n, dtype=np.float64)
    for j in range(times.size):
        c = int((times[j] - start) * RATE_HZ)
        for m in range(max(0, c - half), min(n, c + half + 1)):
            signal[m] += weights[j] * np.exp(-0.5 * ((m - c) / sigma) ** 2)
    size = 1
    while size < 2 * n:
        size *= 2
    padded = np.zeros(size, dtype=np.float64)
    padded[:n] = signal
    spec = np.fft.rfft(padded)
    acf = np.fft.irfft(spec * np.conj(spec), size)
    if acf[0] <= 0.0:
        return 0.0
    # candidate beat periods (in samples), scored with a comb over multiples of the period
    lo = int(np.floor(60.0 / MAX_BPM * RATE_HZ * 0.97))
    hi = int(np.ceil(60.0 / MIN_BPM * RATE_HZ * 1.03))
    score = np.zeros(hi - lo + 1)
    for i in range(hi - lo + 1):
        period = lo + i
        for k in range(COMB.size):
            lag = period * (k + 1)
            if lag < n - 1:
                score[i] += COMB[k] * acf[lag] / acf[0]
    best = int(np.argmax(score))
    period_f = float(lo + best)
    if 0 < best < score.size - 1:  # parabolic refinement
        y0, y1, y2 = score[best - 1], score[best], score[best + 1]
        den = y0 - 2.0 * y1 + y2
        if den < 0.0:
            period_f += 0.5 * (y0 - y2) / den
    return period_f / RATE_HZ
