"""Monophonic pitch on held-out renders over MIDI 36-96: raw pitch accuracy at 50 cents."""

from __future__ import annotations

import numpy as np

from edge_node.material import metrics, render, sets


def test_raw_pitch_accuracy_over_the_keyboard(heldout_pitch: list[sets.Item]) -> None:
    accuracies, weights, lowest, highest = [], [], 127, 0
    for item in heldout_pitch:
        notes = item.piece.midi.instruments[0].notes
        lowest = min(lowest, min(n.pitch for n in notes))
        highest = max(highest, max(n.pitch for n in notes))
        run = metrics.run_pipeline(item.audio)
        s = metrics.pitch_scores(item.piece.midi, run, render.load(item.audio))
        accuracies.append(s["raw_pitch_accuracy"])
        weights.append(s["voiced_frames"])
    assert lowest <= 37 and highest >= 95, "the set must span MIDI 36-96"
    rpa = float(np.average(accuracies, weights=weights))
    assert rpa >= 0.97, f"raw pitch accuracy {rpa:.3f}"
    assert min(accuracies) >= 0.9, f"worst piece {min(accuracies):.3f}"


def test_pure_tones_are_named_to_a_few_cents(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import soundfile as sf

    t = np.arange(48_000) / 48_000
    for midi in (36, 48, 60, 72, 84, 96):
        f0 = 440.0 * 2 ** ((midi - 69) / 12)
        tone = sum(0.3 / k * np.sin(2 * np.pi * k * f0 * t) for k in (1, 2, 3))
        path = tmp_path / f"tone{midi}.wav"
        sf.write(path, tone.astype(np.float32), 48_000)
        run = metrics.run_pipeline(path)
        est = np.array([e["midi"] for e in run.by_type["pitch"] if e["t"] > 0.1])
        assert est.size > 30
        assert np.median(np.abs(est - midi)) < 0.05, (midi, np.median(est))
