"""Dynamics: RMS level in dBFS and a MIDI-velocity estimate per onset.

The velocity of an onset is estimated from the power the new note adds: the peak power of the
``ATTACK_HOPS`` hops after the onset minus the quietest hop of the 40 ms before its chunk (so a chord
over a sustained note is judged by what it adds). The map from added level (dBFS) to velocity is affine and clipped, fitted
on renders of the tuning set (``bench/calibrate_velocity.py``); its coefficients are below.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

ATTACK_HOPS = 6  # 30 ms after the onset
SILENCE_DBFS = -90.0

# velocity = VEL_SLOPE * level_dbfs + VEL_INTERCEPT, fitted on the tuning set
VEL_SLOPE = 2.8
VEL_INTERCEPT = 174.0


@njit(cache=True, nogil=True)
def hop_powers(chunk: np.ndarray, hop: int, out: np.ndarray) -> float:
    """Mean power of each whole hop of ``chunk`` into ``out``; returns the mean power of them all."""
    n = chunk.shape[0] // hop
    total = 0.0
    for h in range(n):
        s = 0.0
        for i in range(h * hop, (h + 1) * hop):
            v = chunk[i]
            s += v * v
        out[h] = s / hop
        total += s
    return total / (n * hop) if n else 0.0


def power_to_dbfs(power: float) -> float:
    """Mean power of a float signal (full scale = 1.0) to dBFS (a full-scale sine is -3 dBFS)."""
    if power <= 1e-12:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 10.0 * math.log10(power))


def dbfs_to_velocity(level_dbfs: float) -> int:
    v = VEL_SLOPE * level_dbfs + VEL_INTERCEPT
    return int(min(127, max(1, round(v))))
