"""Simulated practice performances of a reference piece, with injected mistakes and exact ground truth.

Used by the tests and ``bench/bench_scoring.py``: a :class:`Piece` is played at a tempo factor with
gradual drift, mild rubato and human jitter; chosen notes are played with a wrong pitch, skipped,
preceded by an extra note, or shifted early/late; optionally the player stops and restarts from an
earlier bar after a pause. :meth:`Performance.to_midi` gives the MIDI to render with fluidsynth.

Mistakes are isolated (at least ``MIN_MISTAKE_SPACING`` played notes apart, none in the first notes
or around the restart) so every one has an unambiguous ground truth. Mistake positions are drawn in
one seeded order and a performance with ``level`` k plays the first k per class, so levels nest: a
performance at a higher level has every mistake of the lower one, and more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .piece import Piece

Label = Literal["correct", "wrong_pitch", "extra", "early", "late"]
MISTAKE_CLASSES = ("wrong_pitch", "missed", "extra", "timing")

LEAD_IN_S = 0.5  # silence before the first note
MIN_MISTAKE_SPACING = 3  # played notes between two injected mistakes, at least
SAFE_START_NOTES = 4  # no mistakes in the first notes (the follower has no tempo yet)
TIMING_SHIFT_MIN_S = 0.08
TIMING_SHIFT_MAX_S = 0.14
MIN_SEPARATION_S = 0.12  # a shifted or inserted note keeps at least this distance to its neighbours
JITTER_S = 0.006  # human onset jitter (standard deviation)
RESTART_PAUSE_S = (0.8, 1.6)


@dataclass(frozen=True, slots=True)
class PerfNote:
    """One played note and the truth about it. ``ref_index`` is None for extra notes."""

    onset_s: float
    pitch: int
    velocity: int
    duration_s: float
    label: Label
    ref_index: int | None
    shift_s: float = 0.0
    after_restart: bool = False


@dataclass(frozen=True, slots=True)
class MissedTruth:
    ref_index: int
    expected_s: float


@dataclass(frozen=True)
class Performance:
    """What was played (sorted by onset), what was skipped, and where the restart happened."""

    piece: Piece
    notes: tuple[PerfNote, ...]
    missed: tuple[MissedTruth, ...]
    tempo_factor: float
    drift: float
    restart_onset_s: float | None = None
    restart_ref_index: int | None = None

    def to_midi(self, program: int = 0) -> object:
        """A pretty_midi object of the performance (monophonic pieces stay monophonic)."""
        import pretty_midi

        pm = pretty_midi.PrettyMIDI(initial_tempo=120.0)
        inst = pretty_midi.Instrument(program=program, name="piano")
        notes = sorted(self.notes, key=lambda n: n.onset_s)
        for n in notes:
            inst.notes.append(pretty_midi.Note(int(n.velocity), int(n.pitch), n.onset_s, n.onset_s + n.duration_s))
        pm.instruments.append(inst)
        return pm

    def count(self, cls: str) -> int:
        if cls == "missed":
            return len(self.missed)
        if cls == "timing":
            return sum(n.label in ("early", "late") for n in self.notes)
        return sum(n.label == cls for n in self.notes)


@dataclass(frozen=True)
class MistakePlan:
    """How to play: tempo, drift, and how many mistakes of each class (``per_class``)."""

    per_class: int = 3
    tempo_factor: float = 1.0  # 0.6 = 60 % of the written tempo (slower)
    drift: float = 0.15  # relative tempo change from start to end (+: speeding up)
    rubato: float = 0.0  # amplitude of a slow sinusoidal tempo modulation (relative), e.g. 0.03
    restart: bool = False
    classes: tuple[str, ...] = field(default=MISTAKE_CLASSES)
    # a wrong pitch is the written one moved by one of these (semitones); (-12, 12): octave slips
    wrong_intervals: tuple[int, ...] = (-4, -3, -2, -1, 1, 2, 3, 4)


def perform(piece: Piece, seed: int, plan: MistakePlan, level: int | None = None) -> Performance:
    """Play ``piece`` (monophonic: one note per onset group is best) with the mistakes of ``plan``.

    ``level`` (default ``plan.per_class``) keeps only the first ``level`` mistakes of each class, so
    performances of one seed and plan at increasing levels nest.
    """
    level = plan.per_class if level is None else level
    rng = np.random.default_rng(seed)
    n = len(piece.notes)
    onsets = np.array([note.onset_s for note in piece.notes])
    span = max(float(onsets[-1] - onsets[0]), 1e-3)
    rubato_period = float(rng.uniform(4.0, 8.0)) * 60.0 / piece.bpm
    rubato_phase = float(rng.uniform(0, 2 * np.pi))

    def warp(s: float) -> float:
        """Performance time of written time s: integral of the local seconds-per-written-second."""
        x = (s - onsets[0]) / span
        # tempo (written seconds per performance second) goes from f to f * (1 + drift) linearly in x
        f0 = plan.tempo_factor
        f1 = plan.tempo_factor * (1.0 + plan.drift)
        if abs(f1 - f0) < 1e-9:
            t = (s - onsets[0]) / f0
        else:
            t = span * np.log((f0 + (f1 - f0) * x) / f0) / (f1 - f0)
        t += plan.rubato * rubato_period / (2 * np.pi) * (
            np.sin(2 * np.pi * (s - onsets[0]) / rubato_period + rubato_phase) - np.sin(rubato_phase)
        ) / f0
        return LEAD_IN_S + float(t)

    # the sequence of reference notes played: all, or up to a stop and again from an earlier bar
    sequence: list[tuple[int, float, bool]] = [(i, warp(onsets[i]), False) for i in range(n)]
    restart_onset = None
    restart_ref = None
    stop = -1
    if plan.restart and piece.n_bars >= 4:
        stop = int(rng.integers(int(n * 0.4), int(n * 0.7)))
        stop_bar = piece.notes[stop].bar
        back = int(rng.integers(1, 3))
        target_bar = max(1, stop_bar - back)
        starts = [piece.groups[g][0] for g in piece.bar_start_groups if piece.group_bar[g] == target_bar]
        start = starts[0] if starts else 0
        if start < stop - 2:
            pause = float(rng.uniform(*RESTART_PAUSE_S))
            stop_gap = sequence[stop + 1][1] - sequence[stop][1] if stop + 1 < n else 0.5
            offset = sequence[stop][1] + stop_gap + pause - warp(onsets[start])
            sequence = sequence[: stop + 1] + [(i, warp(onsets[i]) + offset, True) for i in range(start, n)]
            restart_onset = sequence[stop + 1][1]
            restart_ref = start
        else:
            stop = -1
    # eligible positions in the played sequence and the order mistakes are drawn in
    restart_pos = stop + 1 if restart_onset is not None else None
    eligible = [
        k for k in range(SAFE_START_NOTES, len(sequence) - 1)
        if restart_pos is None or not (restart_pos - 3 <= k <= restart_pos + SAFE_START_NOTES)
    ]
    order = list(rng.permutation(eligible))
    picked: dict[int, str] = {}
    counts = dict.fromkeys(plan.classes, 0)
    cls_cycle = list(plan.classes)
    ci = 0
    for k in order:
        if all(counts[c] >= plan.per_class for c in cls_cycle):
            break
        if any(abs(k - other) < MIN_MISTAKE_SPACING for other in picked):
            continue
        for attempt in range(len(cls_cycle)):
            cls = cls_cycle[(ci + attempt) % len(cls_cycle)]
            if counts[cls] < plan.per_class and _fits(cls, k, sequence, piece):
                picked[int(k)] = cls
                counts[cls] += 1
                ci = (ci + attempt + 1) % len(cls_cycle)
                break
    rank = dict.fromkeys(plan.classes, 0)
    chosen: dict[int, str] = {}
    for k, cls in picked.items():  # dicts keep the order of picking
        if rank[cls] < level:
            chosen[k] = cls
        rank[cls] += 1
    notes: list[PerfNote] = []
    missed: list[MissedTruth] = []
    for k, (i, t, after) in enumerate(sequence):
        ref = piece.notes[i]
        prng = np.random.default_rng([seed, k, 7])
        vel = int(np.clip(ref.velocity + prng.normal(0, 5), 15, 120))
        t_play = t + float(prng.normal(0, JITTER_S))
        mistake = chosen.get(k)
        nxt_t = sequence[k + 1][1] if k + 1 < len(sequence) else t + 1.0
        if mistake == "missed":
            missed.append(MissedTruth(i, t))
            continue
        label: Label = "correct"
        pitch = ref.pitch
        shift = 0.0
        if mistake == "wrong_pitch":
            label = "wrong_pitch"
            pitch = _other_pitch(prng, ref.pitch, _neighbour_pitches(k, sequence, piece), plan.wrong_intervals)
        elif mistake == "timing":
            shift = float(prng.uniform(TIMING_SHIFT_MIN_S, TIMING_SHIFT_MAX_S)) * (1 if prng.random() < 0.5 else -1)
            label = "late" if shift > 0 else "early"
            t_play = t + shift
        notes.append(PerfNote(t_play, pitch, vel, 0.0, label, i, shift, after))
        if mistake == "extra":
            t_extra = t + 0.5 * (nxt_t - t)
            pitch_x = _other_pitch(prng, ref.pitch, _neighbour_pitches(k, sequence, piece) | {ref.pitch})
            notes.append(PerfNote(t_extra, pitch_x, int(np.clip(vel - 10, 15, 120)), 0.0, "extra", None, 0.0, after))
    notes.sort(key=lambda x: x.onset_s)
    # durations: legato up to the next onset, shortened so that every note has its own attack
    final: list[PerfNote] = []
    for k, note in enumerate(notes):
        nxt = notes[k + 1].onset_s if k + 1 < len(notes) else note.onset_s + 1.0
        ref_dur = piece.notes[note.ref_index].duration_s / plan.tempo_factor if note.ref_index is not None else 0.2
        dur = max(0.05, min(ref_dur, nxt - note.onset_s - 0.02))
        final.append(PerfNote(note.onset_s, note.pitch, note.velocity, dur, note.label, note.ref_index,
                              note.shift_s, note.after_restart))
    return Performance(piece, tuple(final), tuple(missed), plan.tempo_factor, plan.drift,
                       restart_onset, restart_ref)


def _fits(cls: str, k: int, sequence: list[tuple[int, float, bool]], piece: Piece) -> bool:
    """Whether mistake ``cls`` at played position ``k`` keeps an unambiguous ground truth."""
    t = sequence[k][1]
    prev_gap = t - sequence[k - 1][1]
    next_gap = sequence[k + 1][1] - t
    if cls == "extra":
        return next_gap >= 2 * MIN_SEPARATION_S + 0.1
    if cls == "timing":
        return min(prev_gap, next_gap) >= TIMING_SHIFT_MAX_S + MIN_SEPARATION_S
    if cls == "missed":
        # a skipped note whose neighbour has the same pitch would look like a late/early repeat
        i = sequence[k][0]
        return piece.notes[i].pitch not in _neighbour_pitches(k, sequence, piece)
    return True


def _neighbour_pitches(k: int, sequence: list[tuple[int, float, bool]], piece: Piece) -> set[int]:
    out = set()
    for d in (-1, 1):
        if 0 <= k + d < len(sequence):
            out.add(piece.notes[sequence[k + d][0]].pitch)
    return out


def _other_pitch(rng: np.random.Generator, pitch: int, avoid: set[int],
                 intervals: tuple[int, ...] = (-4, -3, -2, -1, 1, 2, 3, 4)) -> int:
    for _ in range(20):
        cand = pitch + int(rng.choice(list(intervals)))
        if cand not in avoid and cand != pitch and 21 <= cand <= 108:
            return cand
    return pitch + 5 if pitch + 5 not in avoid else pitch - 5
