"""Onsets on the held-out renders: F-measure at +-50/25 ms (mir_eval) and emission latency."""

from __future__ import annotations

import numpy as np

from edge_node.material import metrics, midi, sets


def test_onset_f_measure_and_latency_meet_acceptance(heldout_onsets: list[sets.Item]) -> None:
    f50, f25, latencies = [], [], []
    for item in heldout_onsets:
        run = metrics.run_pipeline(item.audio)
        scores = metrics.onset_scores(midi.onsets_of(item.piece.midi), run)
        f50.append(scores["f_50ms"])
        f25.append(scores["f_25ms"])
        latencies.extend(scores["latencies_s"])
    assert np.mean(f50) >= 0.97, f"F(50 ms) = {np.mean(f50):.3f}"
    assert np.mean(f25) >= 0.95, f"F(25 ms) = {np.mean(f25):.3f}"
    lat_ms = np.array(latencies) * 1000
    assert np.median(lat_ms) <= 20.0, f"median latency {np.median(lat_ms):.1f} ms"
    assert np.percentile(lat_ms, 95) <= 30.0, f"p95 latency {np.percentile(lat_ms, 95):.1f} ms"


def test_silence_and_steady_noise_give_no_onsets(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import soundfile as sf

    rng = np.random.default_rng(3)
    audio = np.concatenate([np.zeros(48_000), rng.standard_normal(5 * 48_000) * 10 ** (-50 / 20)])
    path = tmp_path / "noise.wav"
    sf.write(path, audio.astype(np.float32), 48_000)
    run = metrics.run_pipeline(path)
    assert run.times("onset").size <= 1  # at most the noise's own start
    assert not run.by_type.get("note")


def test_every_onset_event_has_schema_fields(heldout_onsets: list[sets.Item]) -> None:
    run = metrics.run_pipeline(heldout_onsets[0].audio)
    seqs = [e["seq"] for e in run.events]
    assert seqs == list(range(len(seqs)))
    for e in run.by_type["onset"]:
        assert set(e) == {"type", "seq", "t", "strength"}
        assert 0.0 <= e["t"] <= run.duration_s
