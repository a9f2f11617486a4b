"""Scoring transcriptions against MIDI ground truth (mir_eval), and the held-out evaluation material.

Used by the CI floor test, ``bench/bench_model.py`` and the training script's tuning. mir_eval is a
development dependency; it is imported only when scoring. The held-out set is rendered with
``HELD_OUT_SOUNDFONT`` from the shared ``edge_node.material.midi`` generators, with reverb and noise:
neither that soundfont nor those generators are used to train or tune the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pretty_midi

SUSTAIN_CC = 64
ONSET_TOLERANCE_S = 0.05
HELD_OUT_SOUNDFONT = "TimGM6mb.sf2"
HELD_OUT_NOISE_DBFS = -50.0


@dataclass(frozen=True)
class NoteTruth:
    """Notes for mir_eval: intervals ``(n, 2)`` seconds (sounding, i.e. pedal-extended), MIDI pitches,
    velocities 1-127."""

    intervals: np.ndarray
    pitches: np.ndarray
    velocities: np.ndarray

    @staticmethod
    def of(notes: Iterable[tuple[float, float, int, int]]) -> NoteTruth:
        rows = sorted(notes)
        if not rows:
            return NoteTruth(np.zeros((0, 2)), np.zeros(0, dtype=int), np.zeros(0, dtype=int))
        arr = np.array(rows, dtype=np.float64)
        return NoteTruth(arr[:, :2], arr[:, 2].astype(int), arr[:, 3].astype(int))


def sounding_notes(pm: pretty_midi.PrettyMIDI) -> NoteTruth:
    """Notes with their *sounding* end: a key released while the sustain pedal is down sounds on until
    the pedal comes up or the same key is struck again (the convention of piano transcription sets)."""
    rows: list[tuple[float, float, int, int]] = []
    end_of_piece = pm.get_end_time()
    for inst in pm.instruments:
        ccs = sorted((c.time, c.value >= 64) for c in inst.control_changes if c.number == SUSTAIN_CC)
        by_pitch: dict[int, list[pretty_midi.Note]] = {}
        for n in sorted(inst.notes, key=lambda n: n.start):
            by_pitch.setdefault(n.pitch, []).append(n)
        for pitch, ns in by_pitch.items():
            for i, n in enumerate(ns):
                end = n.end
                down = False
                for ct, d in ccs:
                    if ct > n.end:
                        break
                    down = d
                if down:
                    later_up = [ct for ct, d in ccs if ct > n.end and not d]
                    end = later_up[0] if later_up else end_of_piece
                if i + 1 < len(ns):
                    end = min(end, ns[i + 1].start)
                rows.append((n.start, max(end, n.start + 0.02), pitch, n.velocity))
    return NoteTruth.of(rows)


@dataclass(frozen=True)
class Scores:
    """Note-level F1 (mir_eval.transcription, 50 ms onset tolerance)."""

    onset_f1: float
    offset_f1: float
    velocity_f1: float
    onset_precision: float
    onset_recall: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in self.__dict__.items()}


def _hz(midi: np.ndarray) -> np.ndarray:
    return np.asarray(440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0))


def score(truth: NoteTruth, est: NoteTruth) -> Scores:
    """mir_eval note scores of ``est`` against ``truth``: onsets only, with offsets, with offsets and
    velocity (mir_eval's velocity-aware metric, which fits estimated to reference velocities)."""
    from mir_eval import transcription, transcription_velocity

    if truth.intervals.shape[0] == 0 or est.intervals.shape[0] == 0:
        return Scores(0.0, 0.0, 0.0, 0.0, 0.0)
    ri, rp, ei, ep = truth.intervals, _hz(truth.pitches), est.intervals, _hz(est.pitches)
    p, r, f_on, _ = transcription.precision_recall_f1_overlap(
        ri, rp, ei, ep, onset_tolerance=ONSET_TOLERANCE_S, offset_ratio=None)
    _, _, f_off, _ = transcription.precision_recall_f1_overlap(ri, rp, ei, ep, onset_tolerance=ONSET_TOLERANCE_S)
    _, _, f_vel, _ = transcription_velocity.precision_recall_f1_overlap(
        ri, rp, truth.velocities.astype(np.float64), ei, ep, est.velocities.astype(np.float64),
        onset_tolerance=ONSET_TOLERANCE_S)
    return Scores(f_on, f_off, f_vel, p, r)


def mean_scores(all_scores: Sequence[Scores]) -> Scores:
    """Unweighted mean over pieces."""
    if not all_scores:
        return Scores(0.0, 0.0, 0.0, 0.0, 0.0)
    cols = np.array([[s.onset_f1, s.offset_f1, s.velocity_f1, s.onset_precision, s.onset_recall]
                     for s in all_scores])
    m = cols.mean(axis=0)
    return Scores(*(float(v) for v in m))


@dataclass(frozen=True)
class EvalPiece:
    """A rendered evaluation piece and its truth."""

    name: str
    audio_path: Path
    truth: NoteTruth


def held_out_pieces(n: int, seed: int = 20_061, soundfont: str = HELD_OUT_SOUNDFONT) -> list[EvalPiece]:
    """``n`` held-out pieces: the shared material generators (melody, block chords, two-hand pieces,
    chord velocity ramps) rendered with ``soundfont``, fluidsynth reverb on and noise at
    ``HELD_OUT_NOISE_DBFS``. Renders are cached by ``edge_node.material.render``."""
    from ..material import midi
    from ..material.render import RenderOptions, render

    rng = np.random.default_rng(seed)
    pieces: list[EvalPiece] = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            piece = midi.melody(rng, n_notes=30)
        elif kind == 1:
            piece = midi.chords(rng, n_chords=12)
        elif kind == 2:
            piece = midi.accented_piece(rng, bpm=float(rng.uniform(50, 90)), bars=4)
        else:
            piece = midi.velocity_ramp(rng, chord=True, n=12)
        opts = RenderOptions(soundfont=soundfont, gain=float(rng.uniform(0.3, 0.8)), reverb=True,
                             noise_dbfs=HELD_OUT_NOISE_DBFS, seed=seed + i)
        pieces.append(EvalPiece(f"{piece.name}-{i}", render(piece.midi, opts), sounding_notes(piece.midi)))
    return pieces
