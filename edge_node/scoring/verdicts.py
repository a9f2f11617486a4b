"""Per-note verdicts: what a played onset group says about the reference notes it was aligned to.

Pure functions. :func:`match_group` pairs the pitches of one played onset group with the notes of the
reference group the follower aligned it to (exact pitches first, then the nearest remaining pitches as
wrong notes); :class:`Judgement` is one decided verdict and :func:`score_fields` its ``score`` event.

Timing: ``timing_ms`` is played onset minus expected onset, both in the performance's time base
(the follower's tempo model maps the written time to it). It is ``None`` while the follower has no
tempo basis (the first notes, and the first note after a restart). A note is ``early``/``late`` when
``|timing_ms|`` reaches :func:`timing_tolerance_ms` (50 ms, up to 60 ms for notes after long gaps).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

Verdict = Literal["correct", "wrong_pitch", "missed", "extra"]
TimingClass = Literal["early", "late", "on_time"]

TIMING_TOLERANCE_MS = 50.0  # |played - expected| at or beyond this is early/late (acceptance: 80 ms)...
TIMING_TOLERANCE_REL = 0.05  # ...or this fraction of the expected gap from the previous note...
TIMING_TOLERANCE_MAX_MS = 60.0  # ...up to this (long gaps are predicted less precisely)
COST_WRONG_PITCH = 4.0  # -log probability-like costs shared with the follower
COST_MISSED = 4.0
COST_EXTRA = 4.0
# A monophonic pitch tracker's typical errors: the note reported at a (sub)harmonic, i.e. shifted by
# 12 x log2(k) semitones (k = 2, 3, 4, 5, 6). For notes flagged ``harmonic_ambiguous`` (light-mode
# kernel notes) such a pitch counts as the written one, but at a cost between an exact match and a
# wrong pitch, so a skipped note followed by an octave leap is still a skip. The octave is the
# exception once the note's settled part reads one pitch clearly (``octave_sure``): the tracker's
# sure misreadings are deep subharmonics (19, 28 semitones), while a student's slip is an octave.
HARMONIC_INTERVALS = frozenset({12, 19, 24, 28, 31})
SURE_HARMONIC_INTERVALS = HARMONIC_INTERVALS - {12}
NO_LEEWAY: frozenset[int] = frozenset()
COST_HARMONIC_MATCH = 2.5


@dataclass(frozen=True, slots=True)
class PlayedNote:
    """A note the transcription announced: onset (performance seconds), MIDI pitch, velocity."""

    onset_s: float
    pitch: int
    velocity: int = 64
    note_id: int | str | None = None
    harmonic_ambiguous: bool = False  # the transcription may report it at a (sub)harmonic
    octave_sure: bool = False  # ...but its reading was clear enough that an octave off is a slip

    @property
    def leeway(self) -> frozenset[int]:
        """Intervals (semitones) at which this note still counts as the written pitch."""
        if not self.harmonic_ambiguous:
            return NO_LEEWAY
        return SURE_HARMONIC_INTERVALS if self.octave_sure else HARMONIC_INTERVALS


@dataclass(frozen=True, slots=True)
class Judgement:
    """One decided verdict about one reference note (or one extra played note).

    ``t`` is the played onset, or for ``missed`` the expected onset in the performance's time base.
    ``decided_s`` is the audio time at which the follower decided it; ``evidence_s`` the onset of the
    played note whose arrival made the decision possible (for a missed note: the note played past it).
    """

    verdict: Verdict
    t: float
    ref_index: int | None
    expected_pitch: int | None
    played: PlayedNote | None
    expected_t: float | None
    timing_ms: float | None
    bar: int | None
    decided_s: float
    evidence_s: float
    ref_velocity: int | None = None
    restart: bool = False  # the first note after the follower relocated to an earlier bar
    tolerance_ms: float = TIMING_TOLERANCE_MS

    @property
    def timing(self) -> TimingClass | None:
        return classify_timing(self.timing_ms, self.tolerance_ms)

    @property
    def velocity_delta(self) -> int | None:
        if self.played is None or self.ref_velocity is None:
            return None
        return int(self.played.velocity) - int(self.ref_velocity)


def timing_tolerance_ms(expected_gap_s: float) -> float:
    """The early/late threshold for a note expected ``expected_gap_s`` after the previous one."""
    return min(TIMING_TOLERANCE_MAX_MS, max(TIMING_TOLERANCE_MS, TIMING_TOLERANCE_REL * 1000.0 * expected_gap_s))


def classify_timing(timing_ms: float | None, tolerance_ms: float = TIMING_TOLERANCE_MS) -> TimingClass | None:
    """``early``/``late`` at or beyond ``tolerance_ms``, else ``on_time``; None without a basis."""
    if timing_ms is None:
        return None
    if timing_ms <= -tolerance_ms:
        return "early"
    if timing_ms >= tolerance_ms:
        return "late"
    return "on_time"


@dataclass(frozen=True, slots=True)
class GroupMatch:
    """How one played group lines up with one reference group (indices into the given sequences)."""

    correct: tuple[tuple[int, int], ...]  # (ref position, played position)
    wrong: tuple[tuple[int, int], ...]
    missed: tuple[int, ...]  # ref positions with no played note
    extra: tuple[int, ...]  # played positions with no ref note
    cost: float


def same_pitch(ref: int, played: int, leeway: frozenset[int] = NO_LEEWAY) -> bool:
    """Whether ``played`` counts as ``ref`` (exactly, or at an interval of ``leeway``)."""
    return ref == played or abs(ref - played) in leeway


def match_group(ref_pitches: Sequence[int], played_pitches: Sequence[int],
                leeway: frozenset[int] = NO_LEEWAY) -> GroupMatch:
    """Pair a reference group's pitches with a played group's: exact matches, then nearest pitches.

    Polyphony-ready: a chord with one wrong key gives one ``wrong`` pair, a chord with a key not
    pressed one ``missed``, an extra key one ``extra``. The cost feeds the follower's alignment.
    With a ``leeway`` (monophonic tracker input, :attr:`PlayedNote.leeway`) a pitch at one of its
    intervals from the written one is taken as correct (see :data:`HARMONIC_INTERVALS`).
    """
    if len(ref_pitches) == 1 and len(played_pitches) == 1:  # the monophonic fast path
        if ref_pitches[0] == played_pitches[0]:
            return GroupMatch(((0, 0),), (), (), (), 0.0)
        if abs(ref_pitches[0] - played_pitches[0]) in leeway:
            return GroupMatch(((0, 0),), (), (), (), COST_HARMONIC_MATCH)
        return GroupMatch((), ((0, 0),), (), (), COST_WRONG_PITCH)
    free_ref = list(range(len(ref_pitches)))
    free_played = list(range(len(played_pitches)))
    correct: list[tuple[int, int]] = []
    harmonic = 0
    for exact in (True, False) if leeway else (True,):
        for r in list(free_ref):
            for p in free_played:
                if played_pitches[p] == ref_pitches[r] or (
                    not exact and abs(played_pitches[p] - ref_pitches[r]) in leeway
                ):
                    correct.append((r, p))
                    harmonic += not exact
                    free_ref.remove(r)
                    free_played.remove(p)
                    break
    wrong: list[tuple[int, int]] = []
    while free_ref and free_played:
        r, p = min(
            ((r, p) for r in free_ref for p in free_played),
            key=lambda rp: (abs(ref_pitches[rp[0]] - played_pitches[rp[1]]), rp),
        )
        wrong.append((r, p))
        free_ref.remove(r)
        free_played.remove(p)
    cost = (COST_WRONG_PITCH * len(wrong) + COST_MISSED * len(free_ref) + COST_EXTRA * len(free_played)
            + COST_HARMONIC_MATCH * harmonic)
    return GroupMatch(tuple(correct), tuple(wrong), tuple(free_ref), tuple(free_played), cost)


def score_fields(j: Judgement) -> dict[str, Any]:
    """The ``score`` event fields of DESIGN.md plus extensions ``bar``, ``timing``, ``expected_t``."""
    return {
        "ref_index": j.ref_index,
        "expected_pitch": j.expected_pitch,
        "played_pitch": None if j.played is None else int(j.played.pitch),
        "verdict": j.verdict,
        "timing_ms": None if j.timing_ms is None else round(j.timing_ms, 1),
        "velocity_delta": j.velocity_delta,
        "bar": j.bar,
        "timing": j.timing,
        "expected_t": None if j.expected_t is None else round(j.expected_t, 4),
    }
