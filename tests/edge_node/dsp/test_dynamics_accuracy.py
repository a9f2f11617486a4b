"""Velocity estimates rank like the MIDI velocities, for single notes and for chords."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from edge_node.dsp import dynamics
from edge_node.material import metrics, sets


def test_velocity_estimates_correlate_with_midi_velocity(heldout_dynamics: list[sets.Item]) -> None:
    per_kind: dict[bool, tuple[list[int], list[int]]] = {False: ([], []), True: ([], [])}
    for item in heldout_dynamics:
        ref, est = metrics.note_velocity_pairs(item.piece.midi, metrics.run_pipeline(item.audio))
        chord = "chords" in item.piece.name
        per_kind[chord][0].extend(ref)
        per_kind[chord][1].extend(est)
    for chord, (ref, est) in per_kind.items():
        assert len(ref) >= 100
        rho = spearmanr(ref, est).statistic
        assert rho >= 0.9, f"{'chords' if chord else 'single notes'}: Spearman {rho:.3f}"


def test_level_map_is_monotonic_and_clipped() -> None:
    levels = np.linspace(-100, 10, 200)
    vel = [dynamics.dbfs_to_velocity(x) for x in levels]
    assert vel == sorted(vel)
    assert vel[0] == 1 and vel[-1] == 127
