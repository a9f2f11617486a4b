"""Judge the follower's verdicts against a simulated performance's ground truth (tests and bench).

Played-note verdicts are paired with the performed notes by onset (nearest within
``ONSET_MATCH_S``); ``missed`` verdicts with the skipped notes by reference index. Per mistake class
(``wrong_pitch``, ``missed``, ``extra``, ``timing`` = early/late) this gives precision and recall;
for clean notes, the fraction marked correct (right pitch, on time or no timing basis). A verdict
for a note that was never transcribed (or a transcribed note with no verdict) is counted against the
follower and reported apart, so losses caused by the transcription front end are visible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .mistakes import MISTAKE_CLASSES, MistakePlan, Performance, perform
from .piece import Piece, piece_from_notes
from .verdicts import Judgement, same_pitch

ONSET_MATCH_S = 0.07  # a verdict's played onset within this of a performed note refers to it
LATENCY_LIMIT_S = 0.3
TUNING_SOUNDFONT = "FluidR3_GM.sf2"
HELDOUT_SOUNDFONT = "TimGM6mb.sf2"
HELDOUT_SEEDS = range(1000, 1020)
MELODY_REGISTER = (55, 84)  # where the light-mode pitch tracker is reliable


OCTAVE_SLIPS = (-12, 12)


def tuning_performance(seed: int, level: int | None = None, n_notes: int = 40,
                       octave_slips: bool = False) -> Performance:
    """The tuning set (tests, tuning): a ``melody`` at 0.6x-1.3x with drift, every other one restarted.
    ``octave_slips``: the wrong pitches are the written note an octave off (instead of 1-4 semitones)."""
    from ..material import midi

    rng = np.random.default_rng(seed)
    piece = piece_of(midi.melody(rng, lo=MELODY_REGISTER[0], hi=MELODY_REGISTER[1], n_notes=n_notes).midi)
    return perform(piece, seed, _plan(rng, seed, octave_slips), level=level)


def heldout_performance(seed: int, level: int | None = None, octave_slips: bool = False) -> Performance:
    """The held-out set (bench only, never tuned on): other material families (the melody voice of
    ``accented_piece``, and ``scale`` runs), the same kinds of mistakes and tempo changes."""
    from ..material import midi

    rng = np.random.default_rng(seed)
    if seed % 2:
        gen = midi.scale(rng, lo=MELODY_REGISTER[0], hi=MELODY_REGISTER[1], bpm=float(rng.uniform(60, 110)))
        piece = piece_of(gen.midi, name="scale")
    else:
        gen = midi.accented_piece(rng, bpm=float(rng.uniform(60, 120)), bars=10, register=MELODY_REGISTER)
        piece = piece_of(gen.midi, name="accented-melody", min_pitch=MELODY_REGISTER[0])
    return perform(piece, seed, _plan(rng, seed, octave_slips), level=level)


def piece_of(pm: Any, name: str = "piece", min_pitch: int = 0) -> Piece:
    """A piece from a pretty_midi object, keeping notes at or above ``min_pitch`` (a melody voice)."""
    notes = [(n.pitch, n.start, n.end - n.start, n.velocity) for inst in pm.instruments for n in inst.notes
             if n.pitch >= min_pitch]
    return piece_from_notes(notes, [float(d) for d in pm.get_downbeats()], name=name,
                            bpm=float(pm.get_tempo_changes()[1][0]))


def _plan(rng: np.random.Generator, seed: int, octave_slips: bool = False) -> MistakePlan:
    plan = MistakePlan(per_class=3, tempo_factor=float(rng.uniform(0.6, 1.3)),
                       drift=float(rng.uniform(-0.2, 0.2)), restart=seed % 2 == 0)
    return replace(plan, wrong_intervals=OCTAVE_SLIPS) if octave_slips else plan


@dataclass
class ClassCounts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


@dataclass
class Evaluation:
    """Counts per class, clean-note accuracy, latency, and what the transcription lost."""

    classes: dict[str, ClassCounts] = field(default_factory=lambda: {c: ClassCounts() for c in MISTAKE_CLASSES})
    clean_total: int = 0
    clean_correct: int = 0
    clean_aligned: int = 0  # clean notes whose verdict names the right reference note
    notes_without_verdict: int = 0  # performed notes the transcription lost (or that got no verdict)
    verdicts_without_note: int = 0  # verdicts about transcribed notes that were not performed
    transcription_pitch_errors: int = 0  # notes heard at another pitch than played (not a harmonic)
    fp_from_transcription: dict[str, int] = field(default_factory=dict)  # false verdicts on misheard/lost notes
    fn_from_transcription: dict[str, int] = field(default_factory=dict)  # mistakes on notes never announced
    max_latency_s: float = 0.0
    late_verdicts: int = 0  # decided more than LATENCY_LIMIT_S after their evidence
    # true missed verdicts: audio time from the skipped note's expected onset to the decision
    missed_delay_s: list[float] = field(default_factory=list)
    restart_detected: bool | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def clean_accuracy(self) -> float:
        return self.clean_correct / self.clean_total if self.clean_total else 1.0

    def merge(self, other: Evaluation) -> None:
        for c, k in other.classes.items():
            mine = self.classes.setdefault(c, ClassCounts())
            mine.tp += k.tp
            mine.fp += k.fp
            mine.fn += k.fn
        self.clean_total += other.clean_total
        self.clean_correct += other.clean_correct
        self.clean_aligned += other.clean_aligned
        self.notes_without_verdict += other.notes_without_verdict
        self.verdicts_without_note += other.verdicts_without_note
        self.transcription_pitch_errors += other.transcription_pitch_errors
        for key, v in other.fp_from_transcription.items():
            self.fp_from_transcription[key] = self.fp_from_transcription.get(key, 0) + v
        for key, v in other.fn_from_transcription.items():
            self.fn_from_transcription[key] = self.fn_from_transcription.get(key, 0) + v
        self.max_latency_s = max(self.max_latency_s, other.max_latency_s)
        self.late_verdicts += other.late_verdicts
        self.missed_delay_s.extend(other.missed_delay_s)
        self.errors.extend(other.errors)

    def as_dict(self) -> dict[str, Any]:
        return {
            "classes": {
                c: {"precision": round(k.precision, 4), "recall": round(k.recall, 4), "tp": k.tp, "fp": k.fp,
                    "fn": k.fn}
                for c, k in self.classes.items()
            },
            "clean_notes": self.clean_total,
            "clean_marked_correct": round(self.clean_accuracy, 4),
            "clean_aligned": round(self.clean_aligned / self.clean_total, 4) if self.clean_total else 1.0,
            "notes_without_verdict": self.notes_without_verdict,
            "verdicts_without_note": self.verdicts_without_note,
            "transcription_pitch_errors": self.transcription_pitch_errors,
            "false_verdicts_on_misheard_or_lost_notes": dict(self.fp_from_transcription),
            "mistakes_on_notes_never_announced": dict(self.fn_from_transcription),
            "max_latency_s": round(self.max_latency_s, 4),
            "late_verdicts": self.late_verdicts,
            "missed_decided_after_expected_s": _quantiles(self.missed_delay_s),
        }


def evaluate(perf: Performance, judgements: Sequence[Judgement]) -> Evaluation:
    """Compare ``judgements`` with the truth of ``perf`` (see the module docstring)."""
    ev = Evaluation()
    played_j = sorted((j for j in judgements if j.played is not None), key=lambda j: j.t)
    missed_j = [j for j in judgements if j.verdict == "missed"]
    # latency
    for j in judgements:
        lat = j.decided_s - j.evidence_s
        ev.max_latency_s = max(ev.max_latency_s, lat)
        if lat > LATENCY_LIMIT_S + 1e-9:
            ev.late_verdicts += 1
    # pair played verdicts with performed notes, closest first
    pairs = sorted(
        (abs(j.t - n.onset_s), a, b)
        for a, j in enumerate(played_j) for b, n in enumerate(perf.notes)
        if abs(j.t - n.onset_s) <= ONSET_MATCH_S
    )
    j_used: dict[int, int] = {}
    n_used: dict[int, int] = {}
    for _, a, b in pairs:
        if a in j_used or b in n_used:
            continue
        j_used[a] = b
        n_used[b] = a
    c = ev.classes
    for b, note in enumerate(perf.notes):
        a_opt = n_used.get(b)
        jm = played_j[a_opt] if a_opt is not None else None
        if jm is None:
            ev.notes_without_verdict += 1
            cls = {"wrong_pitch": "wrong_pitch", "extra": "extra", "early": "timing", "late": "timing"}.get(note.label)
            if cls is None:
                ev.clean_total += 1
            else:
                c[cls].fn += 1
                ev.fn_from_transcription[cls] = ev.fn_from_transcription.get(cls, 0) + 1
            continue
        j = jm
        flagged_timing = j.verdict in ("correct", "wrong_pitch") and j.timing in ("early", "late")
        assert j.played is not None
        if not same_pitch(note.pitch, j.played.pitch, j.played.leeway):
            ev.transcription_pitch_errors += 1
            if note.label == "correct" and j.verdict != "correct":
                ev.fp_from_transcription[j.verdict] = ev.fp_from_transcription.get(j.verdict, 0) + 1
        # wrong pitch
        if note.label == "wrong_pitch":
            if j.verdict == "wrong_pitch":
                c["wrong_pitch"].tp += 1
            else:
                c["wrong_pitch"].fn += 1
        elif j.verdict == "wrong_pitch":
            c["wrong_pitch"].fp += 1
        # extra
        if note.label == "extra":
            if j.verdict == "extra":
                c["extra"].tp += 1
            else:
                c["extra"].fn += 1
        elif j.verdict == "extra":
            c["extra"].fp += 1
        # timing
        if note.label in ("early", "late"):
            if flagged_timing and j.timing == note.label:
                c["timing"].tp += 1
            else:
                c["timing"].fn += 1
        elif flagged_timing:
            c["timing"].fp += 1
        if note.label == "correct":
            ev.clean_total += 1
            if j.verdict == "correct" and not flagged_timing:
                ev.clean_correct += 1
            if j.ref_index == note.ref_index:
                ev.clean_aligned += 1
    for a, j in enumerate(played_j):
        if a not in j_used:
            ev.verdicts_without_note += 1
            if j.verdict == "wrong_pitch":
                c["wrong_pitch"].fp += 1
            elif j.verdict == "extra":
                c["extra"].fp += 1
    # missed: by reference index, nearest expected time
    lost_refs = {n.ref_index for b, n in enumerate(perf.notes) if b not in n_used and n.ref_index is not None}
    truth = list(perf.missed)
    for j in missed_j:
        best = None
        for k, m in enumerate(truth):
            if m.ref_index == j.ref_index:
                d = abs((j.expected_t if j.expected_t is not None else j.t) - m.expected_s)
                if best is None or d < best[0]:
                    best = (d, k)
        if best is None:
            c["missed"].fp += 1
            if j.ref_index in lost_refs:  # played, but the transcription never announced it
                ev.fp_from_transcription["missed"] = ev.fp_from_transcription.get("missed", 0) + 1
        else:
            c["missed"].tp += 1
            ev.missed_delay_s.append(j.decided_s - truth[best[1]].expected_s)
            truth.pop(best[1])
    c["missed"].fn += len(truth)
    if perf.restart_onset_s is not None:
        ev.restart_detected = any(
            j.restart and abs(j.t - perf.restart_onset_s) < 1.0 for j in judgements
        )
    return ev


def _quantiles(xs: list[float]) -> dict[str, float] | None:
    if not xs:
        return None
    a = np.asarray(xs)
    return {"median": round(float(np.median(a)), 3), "p95": round(float(np.percentile(a, 95)), 3),
            "max": round(float(a.max()), 3), "n": len(xs)}


def follow_audio(perf: Performance, soundfont: str = "FluidR3_GM.sf2", seed: int = 0) -> Any:
    """Render ``perf`` with fluidsynth and run it through the real streaming pipeline with a
    :class:`~.observer.ScoreObserver`; returns the observer (its ``judgements``, and the events)."""
    from ..audio import iter_file_chunks
    from ..material.render import RenderOptions, render
    from ..pipeline import StreamingPipeline
    from .observer import ScoreObserver

    path = render(perf.to_midi(), RenderOptions(soundfont=soundfont, seed=seed))  # type: ignore[arg-type]
    observer = ScoreObserver(perf.piece)
    pipeline = StreamingPipeline(mode="light", observers=[observer])
    events = []
    for chunk in iter_file_chunks(path):
        events.extend(pipeline.process(chunk))
    events.extend(pipeline.finish())
    observer.events = events  # type: ignore[attr-defined]
    return observer
