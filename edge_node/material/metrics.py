"""Scoring the pipeline against ground truth (mir_eval), shared by tests and ``bench/``.

``run_pipeline`` feeds a file through the real streaming pipeline in 20 ms chunks and records, for
every event, the audio time at which it was emitted (the end of the chunk that produced it), which is
what the latency figures measure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pretty_midi

from ..audio import CHUNK_SAMPLES, SAMPLE_RATE_HZ, iter_file_chunks
from ..events import Event
from ..pipeline import StreamingPipeline
from ..settings import AnalysisSettings


@dataclass
class Run:
    events: list[Event]
    emitted_at: list[float]  # audio time at which each event was emitted
    duration_s: float
    by_type: dict[str, list[Event]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for e in self.events:
            self.by_type.setdefault(e["type"], []).append(e)

    def times(self, type_: str) -> np.ndarray:
        return np.array([e["t"] for e in self.by_type.get(type_, [])])


def run_pipeline(path: Path | str, mode: str = "light", settings: AnalysisSettings | None = None,
                 max_samples: int | None = None) -> Run:
    pipeline = StreamingPipeline(mode=mode, settings=settings)  # type: ignore[arg-type]
    events: list[Event] = []
    emitted: list[float] = []
    seen = 0
    for chunk in iter_file_chunks(path):
        if max_samples is not None and seen + chunk.size > max_samples:
            chunk = chunk[: max_samples - seen]
        seen += chunk.size
        out = pipeline.process(chunk)
        now = pipeline.now_s
        events.extend(out)
        emitted.extend([now] * len(out))
        if max_samples is not None and seen >= max_samples:
            break
    out = pipeline.finish()
    events.extend(out)
    emitted.extend([pipeline.now_s] * len(out))
    return Run(events, emitted, seen / SAMPLE_RATE_HZ)


def onset_scores(ref: np.ndarray, run: Run, windows_s: tuple[float, ...] = (0.05, 0.025)) -> dict[str, Any]:
    import mir_eval

    est = run.times("onset")
    out: dict[str, Any] = {"n_ref": int(ref.size), "n_est": int(est.size)}
    for w in windows_s:
        f, p, r = mir_eval.onset.f_measure(ref, est, window=w)
        out[f"f_{int(w * 1000)}ms"] = f
        out[f"p_{int(w * 1000)}ms"] = p
        out[f"r_{int(w * 1000)}ms"] = r
    # latency: matched (±50 ms) reference onset -> audio time its event was emitted
    onsets = [(e["t"], at) for e, at in zip(run.events, run.emitted_at, strict=True) if e["type"] == "onset"]
    lat: list[float] = []
    if onsets and ref.size:
        est_t = np.array([o[0] for o in onsets])
        est_at = np.array([o[1] for o in onsets])
        matches = mir_eval.util.match_events(ref, est_t, 0.05)
        lat = [float(est_at[j] - ref[i]) for i, j in matches]
    out["latencies_s"] = lat
    out["offsets_s"] = _offsets(ref, est)
    return out


def _offsets(ref: np.ndarray, est: np.ndarray) -> list[float]:
    import mir_eval

    if not ref.size or not est.size:
        return []
    return [float(est[j] - ref[i]) for i, j in mir_eval.util.match_events(ref, est, 0.05)]


def reference_pitch_track(pm: pretty_midi.PrettyMIDI, times: np.ndarray) -> np.ndarray:
    """Ground-truth f0 (Hz, 0 = silent) of monophonic MIDI at ``times``."""
    f = np.zeros(times.size)
    for inst in pm.instruments:
        for n in inst.notes:
            sel = (times >= n.start) & (times < n.end)
            f[sel] = pretty_midi.note_number_to_hz(n.pitch)
    return f


AUDIBLE_BELOW_PEAK_DB = 40.0  # a decayed note stops counting once it is this far below its attack
NOISE_MARGIN_DB = 6.0  # ... or once it is within this margin of the file's noise floor


def audible_mask(pm: pretty_midi.PrettyMIDI, audio: np.ndarray, times: np.ndarray,
                 half_window: int = 512) -> np.ndarray:
    """Frames whose sounding MIDI note is still audible in the render.

    A MIDI note is "on" until its note-off, but a soundfont's high notes can decay to silence long
    before that; no pitch tracker can name a note that is no longer in the audio. A frame counts when
    its level is within ``AUDIBLE_BELOW_PEAK_DB`` of the note's attack peak and ``NOISE_MARGIN_DB``
    above the file's noise floor (10th percentile of frame levels, at least -90 dBFS).
    """
    centers = (times * SAMPLE_RATE_HZ).astype(np.int64)
    level = np.empty(times.size)
    for k, c in enumerate(centers):
        seg = audio[max(0, c - half_window): c + half_window]
        level[k] = 10 * np.log10(float(np.mean(seg.astype(np.float64) ** 2)) + 1e-12) if seg.size else -120.0
    floor = max(-90.0, float(np.percentile(level, 10)))
    mask = np.zeros(times.size, dtype=bool)
    for inst in pm.instruments:
        for n in inst.notes:
            sel = (times >= n.start) & (times < n.end)
            if not sel.any():
                continue
            peak = level[sel].max()
            mask |= sel & (level >= peak - AUDIBLE_BELOW_PEAK_DB) & (level >= floor + NOISE_MARGIN_DB)
    return mask


def frame_grid(duration_s: float) -> np.ndarray:
    """Centres of the pipeline's 20 ms pitch frames (where its pitch events land)."""
    n = int(duration_s * SAMPLE_RATE_HZ) // CHUNK_SAMPLES
    return (np.arange(n) * CHUNK_SAMPLES + CHUNK_SAMPLES / 2) / SAMPLE_RATE_HZ


def track_scores(pm: pretty_midi.PrettyMIDI, audio: np.ndarray, times: np.ndarray,
                 est_f: np.ndarray) -> dict[str, float]:
    """Raw pitch/chroma accuracy (50 cents) of an f0 track (Hz, 0 = none) sampled at ``times``.

    Reference-voiced frames are those whose MIDI note sounds and is audible (:func:`audible_mask`);
    every one of them counts, and a frame with no estimate counts as wrong.
    """
    import mir_eval

    ref_f = reference_pitch_track(pm, times) * audible_mask(pm, audio, times)
    ref_v, ref_c, est_v, est_c = mir_eval.melody.to_cent_voicing(times, ref_f, times, est_f)
    return {
        "raw_pitch_accuracy": float(mir_eval.melody.raw_pitch_accuracy(ref_v, ref_c, est_v, est_c)),
        "raw_chroma_accuracy": float(mir_eval.melody.raw_chroma_accuracy(ref_v, ref_c, est_v, est_c)),
        "voiced_frames": int(ref_v.sum()),
    }


def pitch_scores(pm: pretty_midi.PrettyMIDI, run: Run, audio: np.ndarray) -> dict[str, float]:
    """:func:`track_scores` of the pipeline's ``pitch`` events on its own 20 ms frame grid."""
    grid = frame_grid(run.duration_s)
    est_f = np.zeros(grid.size)
    for e in run.by_type.get("pitch", []):
        k = int(round((e["t"] - grid[0]) * SAMPLE_RATE_HZ / CHUNK_SAMPLES))
        if 0 <= k < grid.size:
            est_f[k] = e["f0_hz"]
    return track_scores(pm, audio, grid, est_f)


def final_tempo(run: Run, last_s: float = 4.0) -> float:
    """Median of the tempo events in the last ``last_s`` seconds of the piece (0 if none)."""
    ev = run.by_type.get("tempo", [])
    if not ev:
        return 0.0
    end = ev[-1]["t"]
    vals = [e["bpm"] for e in ev if e["t"] >= end - last_s]
    return float(np.median(vals))


def note_velocity_pairs(pm: pretty_midi.PrettyMIDI, run: Run, window_s: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(MIDI velocity, estimated velocity) for each ground-truth onset matched by a note event."""
    import mir_eval

    starts: dict[float, int] = {}
    for inst in pm.instruments:
        for n in inst.notes:
            starts[round(n.start, 4)] = max(starts.get(round(n.start, 4), 0), n.velocity)
    ref_t = np.array(sorted(starts))
    ref_v = np.array([starts[t] for t in ref_t])
    notes = [e for e in run.by_type.get("note", []) if e["end"] is None]
    if not notes:
        return np.zeros(0), np.zeros(0)
    est_t = np.array([e["t"] for e in notes])
    est_v = np.array([e["velocity"] for e in notes])
    m = mir_eval.util.match_events(ref_t, est_t, window_s)
    return np.array([ref_v[i] for i, _ in m]), np.array([est_v[j] for _, j in m])
