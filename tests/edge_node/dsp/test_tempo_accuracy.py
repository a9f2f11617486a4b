"""Tempo on held-out steady pieces from 40 to 200 BPM, with extra weight on 60-80 BPM."""

from __future__ import annotations

import numpy as np

from edge_node.dsp import tempo
from edge_node.material import metrics, sets


def test_tempo_within_4_percent_on_95_percent_of_pieces(heldout_tempo: list[sets.Item]) -> None:
    ok, slow_ok, slow_n = 0, 0, 0
    for item in heldout_tempo:
        assert item.piece.bpm is not None
        est = metrics.final_tempo(metrics.run_pipeline(item.audio))
        good = abs(est - item.piece.bpm) / item.piece.bpm <= 0.04
        ok += good
        if 60 <= item.piece.bpm <= 80:
            slow_n += 1
            slow_ok += good
    assert ok / len(heldout_tempo) >= 0.95, f"{ok}/{len(heldout_tempo)} within 4 %"
    assert slow_n >= 8 and slow_ok == slow_n, f"60-80 BPM: {slow_ok}/{slow_n}"


def test_slow_beats_with_some_eighth_notes_are_not_doubled() -> None:
    """At 66 BPM with every third beat subdivided, a 120-BPM prior would report 132."""
    bpm = 66.0
    beat = 60.0 / bpm
    times, weights = [], []
    for b in range(14):
        times.append(b * beat)
        weights.append(3.0 if b % 4 == 0 else 2.0)
        if b % 3 == 1:
            times.append(b * beat + beat / 2)
            weights.append(1.0)
    est, conf = tempo.estimate_tempo(np.array(times), np.array(weights), times[-1] + 0.1)
    assert abs(est - bpm) / bpm < 0.02 and conf > 0


def test_too_few_onsets_give_no_tempo() -> None:
    assert tempo.estimate_tempo(np.array([0.0, 0.5, 1.0]), np.ones(3), 1.5) == (0.0, 0.0)
