"""Generated piano MIDI with exact ground truth (pretty_midi objects).

Every generator takes a ``numpy.random.Generator`` so a seed reproduces the piece exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pretty_midi

PIANO_PROGRAM = 0  # Acoustic Grand Piano
MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
HARMONIC_MINOR = (0, 2, 3, 5, 7, 8, 11)


@dataclass(frozen=True)
class Piece:
    """A generated performance and what is true about it."""

    name: str
    midi: pretty_midi.PrettyMIDI
    bpm: float | None = None  # steady tempo (quarter-note beat), None when it changes


def _new(bpm: float = 120.0) -> tuple[pretty_midi.PrettyMIDI, pretty_midi.Instrument]:
    pm = pretty_midi.PrettyMIDI(initial_tempo=bpm)
    inst = pretty_midi.Instrument(program=PIANO_PROGRAM, name="piano")
    pm.instruments.append(inst)
    return pm, inst


def _scale_pitches(tonic: int, mode: tuple[int, ...], lo: int, hi: int) -> list[int]:
    return [p for p in range(lo, hi + 1) if (p - tonic) % 12 in mode]


def scale(rng: np.random.Generator, lo: int = 36, hi: int = 96, bpm: float | None = None,
          legato: float = 0.95) -> Piece:
    """A one-voice scale run up and down between ``lo`` and ``hi`` (eighth notes)."""
    bpm = bpm or float(rng.uniform(60, 140))
    tonic = int(rng.integers(0, 12))
    mode = MAJOR if rng.random() < 0.6 else HARMONIC_MINOR
    start = int(rng.integers(lo, max(lo + 1, hi - 24)))
    span = int(rng.integers(12, 25))
    pitches = [p for p in _scale_pitches(tonic, mode, start, min(hi, start + span))]
    pitches = pitches + pitches[-2::-1]
    pm, inst = _new(bpm)
    step = 60.0 / bpm / 2
    t = 0.3
    for i, p in enumerate(pitches):
        vel = int(np.clip(rng.normal(80 if i % 4 == 0 else 65, 6), 20, 120))
        inst.notes.append(pretty_midi.Note(vel, p, t, t + step * legato))
        t += step
    return Piece(f"scale-{start}-{bpm:.0f}", pm, bpm)


def melody(rng: np.random.Generator, lo: int = 36, hi: int = 96, n_notes: int = 40,
           bpm: float | None = None) -> Piece:
    """A one-voice melody: mostly steps, some leaps, mixed durations, occasional rests."""
    bpm = bpm or float(rng.uniform(50, 150))
    beat = 60.0 / bpm
    tonic = int(rng.integers(0, 12))
    pool = _scale_pitches(tonic, MAJOR if rng.random() < 0.5 else MINOR, lo, hi)
    idx = int(rng.integers(0, len(pool)))
    pm, inst = _new(bpm)
    t = 0.3
    for _ in range(n_notes):
        step = int(rng.choice([-2, -1, -1, 1, 1, 2, -4, 4, 7, -7]))
        idx = int(np.clip(idx + step, 0, len(pool) - 1))
        dur = beat * float(rng.choice([0.5, 0.5, 1.0, 1.0, 1.5, 2.0]))
        vel = int(rng.integers(35, 115))
        inst.notes.append(pretty_midi.Note(vel, pool[idx], t, t + dur * float(rng.uniform(0.8, 0.98))))
        t += dur
        if rng.random() < 0.08:
            t += beat * 0.5
    return Piece(f"melody-{lo}-{hi}-{bpm:.0f}", pm, bpm)


def chords(rng: np.random.Generator, n_chords: int = 24, bpm: float | None = None) -> Piece:
    """Block chords (3-5 notes, both hands) with varied voicings and velocities."""
    bpm = bpm or float(rng.uniform(50, 120))
    beat = 60.0 / bpm
    pm, inst = _new(bpm)
    t = 0.3
    for _ in range(n_chords):
        root = int(rng.integers(40, 64))
        quality = (0, 4, 7) if rng.random() < 0.5 else (0, 3, 7)
        notes = {root + q for q in quality}
        if rng.random() < 0.5:
            notes.add(root + 12)
        if rng.random() < 0.5:
            notes.add(root - 12)
        dur = beat * float(rng.choice([1.0, 2.0]))
        vel = int(rng.integers(30, 120))
        for p in sorted(notes):
            inst.notes.append(pretty_midi.Note(vel, p, t, t + dur * 0.95))
        t += dur
    return Piece(f"chords-{bpm:.0f}", pm, bpm)


def accented_piece(rng: np.random.Generator, bpm: float, bars: int = 8, beats_per_bar: int = 4,
                   subdivision_prob: float = 0.35, register: tuple[int, int] = (55, 84)) -> Piece:
    """A steady two-hand piece at ``bpm``: a bass note on each beat (or half bar), melody in quarters
    and eighths, downbeats accented as a player would. The quarter note is the beat."""
    beat = 60.0 / bpm
    pm, inst = _new(bpm)
    tonic = int(rng.integers(0, 12))
    pool = _scale_pitches(tonic, MAJOR if rng.random() < 0.5 else MINOR, register[0], register[1])
    idx = len(pool) // 2
    t0 = 0.3
    bass_every = int(rng.choice([1, 2]))
    for bar in range(bars):
        root = 36 + (tonic + int(rng.choice([0, 5, 7, 9]))) % 12
        for b in range(beats_per_bar):
            t = t0 + (bar * beats_per_bar + b) * beat
            accent = 18 if b == 0 else (8 if b == beats_per_bar // 2 else 0)
            base_vel = 62 + accent
            if b % bass_every == 0:
                inst.notes.append(pretty_midi.Note(int(np.clip(base_vel - 5 + rng.normal(0, 3), 20, 127)),
                                                   root + (7 if b % 2 else 0), t, t + beat * bass_every * 0.95))
            if rng.random() < subdivision_prob:
                parts = [(0.0, 0.5), (0.5, 0.5)]
            else:
                parts = [(0.0, 1.0)]
            for off, length in parts:
                idx = int(np.clip(idx + int(rng.choice([-2, -1, 1, 2, 0])), 0, len(pool) - 1))
                vel = base_vel if off == 0.0 else base_vel - 14
                vel = int(np.clip(vel + rng.normal(0, 4), 20, 127))
                s = t + off * beat
                inst.notes.append(pretty_midi.Note(vel, pool[idx], s, s + length * beat * 0.9))
    return Piece(f"piece-{bpm:.0f}", pm, bpm)


def velocity_ramp(rng: np.random.Generator, chord: bool = False, n: int = 24, pitch: int | None = None) -> Piece:
    """Repeated single notes (or chords) with velocities spanning 10..127, shuffled."""
    pm, inst = _new(90.0)
    vels = np.linspace(10, 127, n).round().astype(int)
    rng.shuffle(vels)
    t = 0.3
    for v in vels:
        root = pitch if pitch is not None else int(rng.integers(40, 80))
        ps = [root, root + 4, root + 7] if chord else [root]
        for p in ps:
            inst.notes.append(pretty_midi.Note(int(v), p, t, t + 0.5))
        t += 0.8
    return Piece("velocity-chords" if chord else "velocity-notes", pm, None)


def tempo_change(rng: np.random.Generator, bpm_from: float, bpm_to: float, beats: int = 32) -> Piece:
    """Quarter notes whose tempo glides from ``bpm_from`` to ``bpm_to``."""
    pm, inst = _new(bpm_from)
    t = 0.3
    idx_pool = _scale_pitches(int(rng.integers(0, 12)), MAJOR, 55, 79)
    for i in range(beats):
        bpm = bpm_from + (bpm_to - bpm_from) * i / max(1, beats - 1)
        beat = 60.0 / bpm
        p = idx_pool[int(rng.integers(0, len(idx_pool)))]
        inst.notes.append(pretty_midi.Note(int(rng.integers(50, 100)), p, t, t + beat * 0.9))
        t += beat
    return Piece(f"tempo-{bpm_from:.0f}-{bpm_to:.0f}", pm, None)


def onsets_of(pm: pretty_midi.PrettyMIDI, merge_s: float = 0.03) -> np.ndarray:
    """Ground-truth onset times: note starts, simultaneous ones (within ``merge_s``) merged."""
    starts = np.sort(np.array([n.start for inst in pm.instruments for n in inst.notes]))
    if starts.size == 0:
        return starts
    keep = [starts[0]]
    for s in starts[1:]:
        if s - keep[-1] > merge_s:
            keep.append(s)
    return np.array(keep)


def arpeggios(rng: np.random.Generator, n_groups: int = 10, bpm: float | None = None) -> Piece:
    """Broken chords (Alberti bass and rising arpeggios) in sixteenths/eighths, over two octaves."""
    bpm = bpm or float(rng.uniform(60, 120))
    beat = 60.0 / bpm
    pm, inst = _new(bpm)
    t = 0.3
    for _ in range(n_groups):
        root = int(rng.integers(36, 72))
        chord = [root, root + (4 if rng.random() < 0.5 else 3), root + 7, root + 12]
        pattern = [0, 2, 1, 2] if rng.random() < 0.5 else [0, 1, 2, 3]
        sub = float(rng.choice([0.25, 0.5]))
        for rep in range(2):
            for k in pattern:
                vel = int(np.clip(rng.normal(70 if rep == 0 else 60, 10), 25, 120))
                p = chord[k]
                inst.notes.append(pretty_midi.Note(vel, p, t, t + beat * sub * 0.9))
                t += beat * sub
    return Piece(f"arpeggios-{bpm:.0f}", pm, bpm)


def waltz(rng: np.random.Generator, bpm: float, bars: int = 10) -> Piece:
    """A steady 3/4 piece at ``bpm``: bass on the downbeat, chord on beats 2 and 3 (oom-pah-pah),
    melody in quarters, halves and occasional eighths. The quarter note is the beat."""
    return accented_piece(rng, bpm, bars=bars, beats_per_bar=3, subdivision_prob=0.2, register=(60, 88))


def figuration(rng: np.random.Generator, n_notes: int = 64, bpm: float | None = None) -> Piece:
    """Fast two-voice figuration: a running sixteenth/triplet line over held bass notes, with
    repeated notes, accents over drifting phrase dynamics and pedal-like overlap."""
    bpm = bpm or float(rng.uniform(70, 140))
    beat = 60.0 / bpm
    sub = beat / float(rng.choice([4, 3]))
    pm, inst = _new(bpm)
    pool = _scale_pitches(int(rng.integers(0, 12)), MAJOR if rng.random() < 0.5 else HARMONIC_MINOR, 45, 93)
    idx = len(pool) // 2
    t = 0.3
    level = float(rng.uniform(45, 95))
    for i in range(n_notes):
        level = float(np.clip(level + rng.normal(0, 6), 25, 115))  # phrase dynamics: a random walk
        if i % 8 == 0:
            bass = int(rng.integers(33, 52))
            inst.notes.append(pretty_midi.Note(int(rng.integers(40, 100)), bass, t, t + sub * 8 * 1.05))
        if rng.random() > 0.15:  # 15 %: repeat the previous pitch
            idx = int(np.clip(idx + int(rng.choice([-3, -2, -1, 1, 2, 3, 5])), 0, len(pool) - 1))
        vel = int(np.clip(level + (12 if i % 4 == 0 else 0) + rng.normal(0, 8), 15, 127))
        overlap = float(rng.uniform(0.7, 1.6))  # legato overlap like a half-pedalled passage
        inst.notes.append(pretty_midi.Note(vel, pool[idx], t, t + sub * overlap))
        t += sub
    return Piece(f"figuration-{bpm:.0f}", pm, bpm)
