"""Onset detection: log-magnitude spectral flux (SuperFlux family) with an adaptive threshold.

The detection function is computed every ``HOP_SAMPLES`` (5 ms) on a ``WINDOW_SAMPLES`` Hann window
that ends at the hop, so an attack shows up in the first one or two hops after it starts. Detection
fires on the first hop whose flux rises above ``delta + alpha * mean(recent flux)`` (no look-ahead);
a refractory gap keeps the still-rising flux of the same attack from firing twice. The onset time is
then refined to ~1 ms from the energy envelope of the high-passed signal inside the window.

State (all float64/float32 arrays, owned by the caller; see :func:`new_onset_state`):
``prev_log``: previous frame's log-magnitude spectrum; ``odf_ring``: recent flux values;
``st``: scalars, indexed by the ``ST_*`` constants.
"""

from __future__ import annotations

import numpy as np
from numba import njit

HOP_SAMPLES = 240  # 5 ms at 48 kHz
WINDOW_SAMPLES = 512
MAX_BIN = 192  # ~18 kHz at 93.75 Hz/bin
LAG_FRAMES = 2  # flux against frames >= 10 ms back: an attack spans several 5 ms hops
MEMORY_FRAMES = 4  # ...taking the max over this many frames (beating and tremolo rise less than that)
RING_FRAMES = LAG_FRAMES + MEMORY_FRAMES - 1
LOG_GAMMA = 1000.0
ODF_RING = 24  # 120 ms of flux history for the adaptive threshold
MIN_GAP_HOPS = 7  # 35 ms refractory period
REFINE_BLOCK = 48  # 1 ms energy blocks for onset-time refinement
REFINE_SPAN = WINDOW_SAMPLES  # samples searched back from the detecting hop's end

# indices into the scalar state vector
ST_FRAMES = 0
ST_LAST_ONSET_FRAME = 1
ST_PREV_ODF = 2
ST_RING_POS = 3
ST_DELTA = 4
ST_ALPHA = 5
ST_GAMMA = 6
N_ST = 7

DEFAULT_DELTA = 5.0
DEFAULT_ALPHA = 1.6


def new_onset_state(
    delta: float = DEFAULT_DELTA, alpha: float = DEFAULT_ALPHA, gamma: float = LOG_GAMMA
) -> tuple[np.ndarray, ...]:
    prev_log = np.zeros((RING_FRAMES, MAX_BIN), dtype=np.float32)
    odf_ring = np.zeros(ODF_RING, dtype=np.float64)
    st = np.zeros(N_ST, dtype=np.float64)
    st[ST_LAST_ONSET_FRAME] = -1e9
    st[ST_DELTA] = delta
    st[ST_ALPHA] = alpha
    st[ST_GAMMA] = gamma
    return prev_log, odf_ring, st


HANN = np.hanning(WINDOW_SAMPLES + 2)[1:-1].astype(np.float64)


@njit(cache=True, nogil=True)
def _refine(hist: np.ndarray, end: int) -> tuple[int, float]:
    """Sample index (into hist) where the sharpest energy rise before ``end`` starts, and its size."""
    start = end - REFINE_SPAN
    nblocks = REFINE_SPAN // REFINE_BLOCK
    energies = np.empty(nblocks, dtype=np.float64)
    for b in range(nblocks):
        s = 0.0
        base = start + b * REFINE_BLOCK
        for i in range(base, base + REFINE_BLOCK):
            d = hist[i] - hist[i - 1]
            s += d * d
        energies[b] = s + 1e-12
    best_b = nblocks - 1
    best_ratio = 0.0
    for b in range(3, nblocks):
        ref = max(energies[b - 1], max(energies[b - 2], energies[b - 3]))
        ratio = energies[b] / ref
        if ratio > best_ratio:
            best_ratio = ratio
            best_b = b
    return start + best_b * REFINE_BLOCK, best_ratio


@njit(cache=True, nogil=True)
def onset_chunk(
    hist: np.ndarray,
    n_new: int,
    hann: np.ndarray,
    prev_log: np.ndarray,
    odf_ring: np.ndarray,
    st: np.ndarray,
    out_pos: np.ndarray,
    out_strength: np.ndarray,
    out_odf: np.ndarray,
) -> int:
    """Run the hops covered by the last ``n_new`` samples of ``hist``.

    ``hist`` holds the most recent audio (its last sample is the newest). Writes detected onsets as
    (position in ``hist``, strength) into ``out_pos``/``out_strength`` and each hop's flux into
    ``out_odf``; returns the number of onsets found.
    """
    n_hops = n_new // HOP_SAMPLES
    total = hist.shape[0]
    first_end = total - n_new + HOP_SAMPLES
    found = 0
    frame = np.empty(WINDOW_SAMPLES, dtype=np.float64)
    ref_buf = np.empty(MAX_BIN, dtype=np.float32)
    delta = st[ST_DELTA]
    alpha = st[ST_ALPHA]
    gamma = st[ST_GAMMA]
    for h in range(n_hops):
        end = first_end + h * HOP_SAMPLES
        base = end - WINDOW_SAMPLES
        for i in range(WINDOW_SAMPLES):
            frame[i] = hist[base + i] * hann[i]
        spec = np.fft.rfft(frame)
        flux = 0.0
        frame_no = int(st[ST_FRAMES])
        cur = frame_no % RING_FRAMES  # row of the oldest frame, overwritten by this one
        # reference: element-wise max over frames n-LAG .. n-LAG-MEMORY+1, then +-1 bin
        for k in range(MAX_BIN):
            m = np.float32(0.0)
            for j in range(MEMORY_FRAMES):
                row = (frame_no - LAG_FRAMES - j) % RING_FRAMES
                v = prev_log[row, k]
                if v > m:
                    m = v
            ref_buf[k] = m
        for k in range(1, MAX_BIN):
            re = spec[k].real
            im = spec[k].imag
            lm = np.float32(np.log1p(gamma * np.sqrt(re * re + im * im)))
            ref = ref_buf[k]
            if ref_buf[k - 1] > ref:
                ref = ref_buf[k - 1]
            if k + 1 < MAX_BIN and ref_buf[k + 1] > ref:
                ref = ref_buf[k + 1]
            diff = lm - ref
            if diff > 0.0:
                flux += diff
            prev_log[cur, k] = lm
        frames = st[ST_FRAMES]
        mean = 0.0
        for i in range(ODF_RING):
            mean += odf_ring[i]
        mean /= ODF_RING
        threshold = delta + alpha * mean
        if (
            flux > threshold
            and flux > st[ST_PREV_ODF]
            and frames - st[ST_LAST_ONSET_FRAME] >= MIN_GAP_HOPS
            and frames >= 2
        ):
            pos, _ratio = _refine(hist, end)
            out_pos[found] = pos
            out_strength[found] = flux - threshold
            found += 1
            st[ST_LAST_ONSET_FRAME] = frames
        ring_pos = int(st[ST_RING_POS])
        odf_ring[ring_pos] = flux
        st[ST_RING_POS] = (ring_pos + 1) % ODF_RING
        st[ST_PREV_ODF] = flux
        st[ST_FRAMES] = frames + 1
        out_odf[h] = flux
    return found
