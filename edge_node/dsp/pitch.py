"""Monophonic pitch: YIN (cumulative mean normalised difference) with a voicing confidence.

The difference function compares the newest ``WINDOW_SAMPLES`` with the same span ``tau`` samples
earlier, so short periods are judged on the most recent audio. The cross term is computed with one
real FFT pair (``FFT_SIZE``); energies with running sums. The period is the first dip of the
normalised difference below ``THRESHOLD`` (the global minimum if none), refined by parabolic
interpolation. ``confidence = 1 - d'(tau)``, clipped to [0, 1].
"""

from __future__ import annotations

import numpy as np
from numba import njit

WINDOW_SAMPLES = 1024
TAU_MIN = 8  # 6 kHz
TAU_MAX = 880  # 54.5 Hz: below A1, covers MIDI >= 33
FFT_SIZE = 2048  # >= WINDOW_SAMPLES + TAU_MAX
THRESHOLD = 0.15
NEAR_DIP_RATIO = 1.12  # how far past the first dip a deeper one may replace it
NEAR_DIP_GAIN = 0.6  # ...if it is at most this fraction of the first dip's value
SPAN_SAMPLES = WINDOW_SAMPLES + TAU_MAX  # audio the estimate depends on


@njit(cache=True, nogil=True)
def yin(hist: np.ndarray, sample_rate: float) -> tuple[float, float, float]:
    """(f0 in Hz, confidence, power of the newest window) from the last samples of ``hist``."""
    total = hist.shape[0]
    a = np.zeros(FFT_SIZE, dtype=np.float64)
    b = np.zeros(FFT_SIZE, dtype=np.float64)
    recent0 = total - WINDOW_SAMPLES
    past0 = total - SPAN_SAMPLES
    for i in range(WINDOW_SAMPLES):
        a[i] = hist[recent0 + i]
    for i in range(SPAN_SAMPLES):
        b[i] = hist[past0 + i]
    # c[m] = sum_j a[j] * b[j + m]; lag tau corresponds to m = TAU_MAX - tau
    c = np.fft.irfft(np.conj(np.fft.rfft(a)) * np.fft.rfft(b), FFT_SIZE)
    e_recent = 0.0
    for i in range(WINDOW_SAMPLES):
        e_recent += a[i] * a[i]
    power = e_recent / WINDOW_SAMPLES
    if power < 1e-10:
        return 0.0, 0.0, power
    # energy of the window shifted back by tau: slide from tau=0 (== e_recent) upward
    d = np.zeros(TAU_MAX + 1, dtype=np.float64)
    dn = np.ones(TAU_MAX + 1, dtype=np.float64)
    e_past = e_recent
    running = 0.0
    for tau in range(1, TAU_MAX + 1):
        # window [recent0 - tau, recent0 - tau + W): add sample entering at the start, drop the one leaving
        enter = hist[recent0 - tau]
        leave = hist[recent0 - tau + WINDOW_SAMPLES]
        e_past += enter * enter - leave * leave
        val = e_recent + e_past - 2.0 * c[TAU_MAX - tau]
        if val < 0.0:
            val = 0.0
        d[tau] = val
        running += val
        dn[tau] = val * tau / running if running > 0.0 else 1.0
    best = -1
    tau = TAU_MIN
    while tau < TAU_MAX:
        if dn[tau] < THRESHOLD:
            while tau + 1 < TAU_MAX and dn[tau + 1] < dn[tau]:
                tau += 1
            best = tau
            break
        tau += 1
    if best > 0:
        # Stretched (inharmonic) partials of low piano strings can dip below the threshold a few
        # percent short of the true period; prefer a clearly deeper dip just after the first one.
        limit = min(TAU_MAX - 1, int(best * NEAR_DIP_RATIO))
        deeper = best
        for t2 in range(best + 1, limit + 1):
            if dn[t2] < dn[deeper]:
                deeper = t2
        if dn[deeper] < dn[best] * NEAR_DIP_GAIN:
            best = deeper
    if best < 0:
        best = TAU_MIN
        for t2 in range(TAU_MIN, TAU_MAX):
            if dn[t2] < dn[best]:
                best = t2
    # parabolic interpolation on the normalised difference
    shift = 0.0
    if TAU_MIN < best < TAU_MAX:
        y0 = dn[best - 1]
        y1 = dn[best]
        y2 = dn[best + 1]
        den = y0 - 2.0 * y1 + y2
        if den > 1e-12:
            shift = 0.5 * (y0 - y2) / den
    period = best + shift
    conf = 1.0 - dn[best]
    if conf < 0.0:
        conf = 0.0
    return sample_rate / period, conf, power
