"""Online score follower: aligns played notes to a reference piece, causally, with a tempo model.

Model. A hypothesis is "the student's last played onset group realised reference group ``pos``", with
a tempo model (a robust fit from written time to performance time through the recent matched
onsets; see :class:`Tempo`) and an accumulated cost (a negative log-likelihood, roughly). Each new played onset group
extends every hypothesis by one of:

- *match* reference group ``j`` (``pos < j <= pos + 1 + MAX_SKIP_GROUPS``), the groups in between
  being *missed*; cost: the pitch mismatch of the group (:func:`~.verdicts.match_group`), the missed
  notes, and the timing deviation from the tempo model, scaled to the expected gap;
- *extra*: the group is not in the piece; ``pos`` stays;
- *restart* at the start of an earlier bar (within ``MAX_RESTART_BARS``) or of the piece; cheaper
  after a pause; the tempo line is re-anchored, the tempo ratio kept.

Hypotheses ending at the same ``pos`` are merged (Viterbi), and only the ``BEAM_WIDTH`` cheapest are
kept. This is a beam-pruned HMM/DTW over onset groups, so a tempo of 0.4x-2.5x the written one,
drift and rubato are followed by the tempo model, and spurious or lost transcription notes cost one
*extra* or *missed* instead of derailing the alignment.

Decisions. Each played group is decided at ``onset + DECISION_LAG_S`` of audio time (or as soon as
``LOOKAHEAD_GROUPS`` later groups have arrived): the best path through all groups received so far
chooses its fate (fixed-lag smoothing), so later notes inside that window can correct an ambiguous
one (an extra note vs. an early wrong one, a restart vs. a wrong note). Decisions are never revised;
alternatives stay in the beam, so one wrong guess costs one verdict, not the rest of the piece.

No I/O, no clocks: time only comes from the notes and the ``now_s`` the caller passes.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass, field

from .piece import Piece
from .verdicts import (
    COST_EXTRA,
    COST_MISSED,
    Judgement,
    PlayedNote,
    match_group,
    same_pitch,
    timing_tolerance_ms,
)

DECISION_LAG_S = 0.24  # a played group is decided this long after its onset (+ one 20 ms chunk)
LOOKAHEAD_GROUPS = 2  # ...or as soon as this many later groups have arrived
CHORD_WINDOW_S = 0.05  # played onsets closer than this form one onset group (polyphonic input)
BEAM_WIDTH = 24
MAX_SKIP_GROUPS = 3  # at most this many consecutive reference groups missed in one step
MAX_RESTART_BARS = 16  # restarts are looked for this many bars back (and at the piece's start)
COST_RESTART = 7.0
COST_RESTART_AFTER_PAUSE = 5.5  # (its onset time is no evidence, unlike a matched one)
COST_RESTART_PER_BAR = 0.15  # restarts a few bars back are likelier than far back...
COST_RESTART_FAR = 2.0  # ...up to this much more
COST_RESTART_TO_START = 1.0  # ...except from the very beginning
COST_HESITATION = 3.0  # going on with the next group after a pause (instead of a timing cost)
COST_START_ELSEWHERE = 3.0  # starting at a bar other than the first
COST_EXTRA_UNEXPECTED = 2.5  # on top of COST_EXTRA: a played note is more likely meant than added
COST_MISSED_CHORD_NOTE = 1.0  # a skipped (or added) chord is one slip, not one per key
COST_EXTRA_CHORD_NOTE = 1.0
TIMING_COST_CAP = 6.0
TIMING_SIGMA_ABS_S = 0.03  # timing noise: absolute part...
TIMING_SIGMA_REL = 0.1  # ...plus this fraction of the expected gap since the last matched onset
TIMING_SIGMA_REL_UNSURE = 0.5  # while the tempo ratio is still a guess
TEMPO_ANCHORS = 10  # matched onsets the tempo model is fitted through
TEMPO_INTERCEPT_ANCHORS = 3  # the line goes through the most recent ones (drift follows quickly)
TEMPO_MIN_ANCHORS = 3  # fewer than this: the tempo ratio is a guess, and no timing verdicts
TEMPO_REFIT_ITERATIONS = 3
TEMPO_CURVE_MIN_ANCHORS = 8  # from this many anchors on, the line is the tangent of a quadratic fit
TEMPO_RECENCY_DECAY = 1.0  # weight of an anchor per newer anchor after it (1: none; the curve follows drift)
TEMPO_HUBER_S = 0.02  # residuals beyond this (an early or late note) are down-weighted
TEMPO_RATIO_MIN = 1 / 2.5  # performance seconds per written second: 2.5x faster ...
TEMPO_RATIO_MAX = 2.5  # ... to 2.5x slower than written
PAUSE_MIN_S = 1.0  # silence longer than this and than PAUSE_GAP_FACTOR written gaps is a pause
PAUSE_GAP_FACTOR = 1.5
HESITATION_MIN_S = 0.6  # a group this much (and HESITATION_GAP_FACTOR gaps) overdue: a hesitation
HESITATION_GAP_FACTOR = 2.0
REANCHOR_DEVIATION_S = 0.35  # a matched onset this far off the tempo line re-anchors it (hesitation)
TRAILING_MISSED_GROUPS = 3  # at the end, at most this many unreached final groups count as missed


class Tempo:
    """Recent matched (written s, performance s) onsets and the tempo ratio they imply.

    The line: Theil-Sen slope and a median intercept through the newest onsets (robust start), then
    Huber-weighted least squares (an early or late note barely moves it); from
    ``TEMPO_CURVE_MIN_ANCHORS`` onsets on, the tangent at the newest onset of a weighted quadratic,
    so accelerando/ritardando is extrapolated without lag. Immutable; the fit is computed on first
    use and cached, because most hypotheses are pruned before anyone asks.
    """

    __slots__ = ("_line", "_line_done", "anchors", "prior", "ratio_known")

    def __init__(self, anchors: tuple[tuple[float, float], ...] = (), prior: float = 1.0,
                 ratio_known: bool = False) -> None:
        self.anchors = anchors
        self.prior = prior  # the ratio before these anchors (the written tempo at first)
        self.ratio_known = ratio_known
        self._line: tuple[float, float] | None = None
        self._line_done = False

    def line(self) -> tuple[float, float] | None:
        """(intercept, slope) of performance time against written time, or None without anchors."""
        if not self._line_done:
            self._line = self._fit()
            self._line_done = True
        return self._line

    @property
    def ratio(self) -> float:
        """Performance seconds per written second (2.0 = half the written tempo)."""
        line = self.line()
        return line[1] if line is not None and len(self.anchors) >= 2 else self.prior

    def _fit(self) -> tuple[float, float] | None:
        a = self.anchors
        if not a:
            return None
        slope = self.prior
        if len(a) >= TEMPO_MIN_ANCHORS:
            slopes = [
                (a[j][1] - a[i][1]) / (a[j][0] - a[i][0])
                for i in range(len(a)) for j in range(i + 1, len(a)) if a[j][0] - a[i][0] > 0.05
            ]
            if slopes:
                slope = min(TEMPO_RATIO_MAX, max(TEMPO_RATIO_MIN, _median(slopes)))
        elif len(a) == 2 and not self.ratio_known and a[1][0] - a[0][0] > 0.1:
            slope = min(TEMPO_RATIO_MAX, max(TEMPO_RATIO_MIN, (a[1][1] - a[0][1]) / (a[1][0] - a[0][0])))
        intercept = _median([t - slope * s for s, t in a[-TEMPO_INTERCEPT_ANCHORS:]])
        if len(a) >= TEMPO_MIN_ANCHORS and TEMPO_REFIT_ITERATIONS:
            intercept, slope = _refit(a, intercept, slope)
        return intercept, slope

    @property
    def established(self) -> bool:
        """The ratio is known: timing deviations are measured against the scaled written gap."""
        return len(self.anchors) >= TEMPO_MIN_ANCHORS or (bool(self.anchors) and self.ratio_known)

    @property
    def settled(self) -> bool:
        """Enough onsets on the current line to judge one note early or late."""
        return len(self.anchors) >= TEMPO_MIN_ANCHORS

    def add(self, s: float, t: float) -> Tempo:
        anchors = (*self.anchors, (s, t))[-TEMPO_ANCHORS:]
        known = self.ratio_known or len(anchors) >= TEMPO_MIN_ANCHORS
        return Tempo(anchors, self.ratio, known)

    def reanchor(self, s: float, t: float) -> Tempo:
        return Tempo(((s, t),), self.ratio, self.ratio_known or len(self.anchors) >= TEMPO_MIN_ANCHORS)


@dataclass(frozen=True, slots=True)
class Step:
    """What one hypothesis did with one played group."""

    kind: str  # "match", "extra" or "restart" (a match after relocating)
    group: int | None
    skipped: tuple[int, ...]
    expected_t: float | None  # expected onset of ``group`` in performance time (None: no basis)
    skipped_expected: tuple[float | None, ...]
    timing_basis: bool = False  # the tempo model was established when this step was taken
    gap_s: float = 0.0  # expected time from the previous matched group (performance seconds)


@dataclass(slots=True)
class _Hyp:
    pos: int
    tempo: Tempo
    cost: float
    last_onset: float | None
    step: Step | None = None
    first: _Hyp | None = None  # the level-0 child this path went through (lookahead search)


@dataclass(slots=True)
class _PlayedGroup:
    onset_s: float
    notes: list[PlayedNote] = field(default_factory=list)

    @property
    def pitches(self) -> list[int]:
        return [n.pitch for n in self.notes]

    @property
    def leeway(self) -> frozenset[int]:
        """The widest leeway of its notes (one note per group in light mode, none in detailed)."""
        out: frozenset[int] = frozenset()
        for n in self.notes:
            out |= n.leeway
        return out

    @property
    def time_s(self) -> float:
        return _median([n.onset_s for n in self.notes])


@dataclass
class FollowerStats:
    """Counters for the summary and the bench."""

    groups_decided: int = 0
    restarts: int = 0
    tempo_ratios: list[tuple[float, float]] = field(default_factory=list)  # (performance s, ratio)
    last_pos: int = -1
    max_pos: int = -1


class ScoreFollower:
    """Follows one performance of ``piece``. Feed notes with :meth:`add`, call :meth:`advance`."""

    def __init__(self, piece: Piece, missed_timeout_s: float | None = None) -> None:
        self.piece = piece
        # None: a skipped group is decided when the student plays past it (the default, see module
        # docstring). A number: also declare the next group missed once its expected onset is this
        # long overdue with nothing played (earlier, but a pause or hesitation then reads as a skip)
        self.missed_timeout_s = missed_timeout_s
        self._declared_upto = -1  # groups up to here were already declared missed by the timeout
        self._pending: list[_PlayedGroup] = []
        self._root: list[_Hyp] = self._initial_beam()
        self._last_decided_onset: float | None = None
        self.stats = FollowerStats()
        self._finished = False

    # ------------------------------------------------------------------ public
    def add(self, note: PlayedNote) -> None:
        """A played note (an onset with its pitch), in roughly increasing onset order."""
        if self._finished:
            return
        for g in self._pending:
            if abs(note.onset_s - g.onset_s) <= CHORD_WINDOW_S:
                g.notes.append(note)
                return
        insort(self._pending, _PlayedGroup(note.onset_s, [note]), key=lambda g: g.onset_s)

    def advance(self, now_s: float) -> list[Judgement]:
        """Decide every pending group whose deadline has passed at audio time ``now_s``."""
        out: list[Judgement] = []
        while self._pending and (
            now_s >= self._pending[0].onset_s + DECISION_LAG_S or len(self._pending) > LOOKAHEAD_GROUPS
        ):
            out.extend(self._decide_first(now_s))
        if self.missed_timeout_s is not None and not self._pending and not self._finished:
            out.extend(self._timed_out(now_s, self.missed_timeout_s))
        return out

    def _timed_out(self, now_s: float, timeout_s: float) -> list[Judgement]:
        """Groups whose expected onset is ``timeout_s`` overdue with nothing played: missed."""
        out: list[Judgement] = []
        best = min(self._root, key=lambda h: h.cost)
        line = best.tempo.line()
        if line is None or not best.tempo.settled or best.pos < 0:
            return out
        while True:
            g = max(best.pos, self._declared_upto) + 1
            if g >= self.piece.n_groups or g > best.pos + MAX_SKIP_GROUPS:
                return out
            exp_t = line[0] + line[1] * self.piece.group_onset_s[g]
            if now_s < exp_t + timeout_s:
                return out
            self._declared_upto = g
            out.extend(self._missed(g, exp_t, now_s, exp_t))

    def finish(self, now_s: float) -> list[Judgement]:
        """End of the performance: decide what is pending and the unreached end of the piece."""
        if self._finished:
            return []
        out: list[Judgement] = []
        while self._pending:
            out.extend(self._decide_first(now_s))
        self._finished = True
        best = min(self._root, key=lambda h: h.cost)
        remaining = range(max(best.pos, self._declared_upto) + 1, self.piece.n_groups)
        if self.stats.groups_decided and 0 < len(remaining) <= TRAILING_MISSED_GROUPS:
            line = best.tempo.line()
            for g in remaining:
                exp_t = None if line is None else line[0] + line[1] * self.piece.group_onset_s[g]
                out.extend(self._missed(g, exp_t, now_s, now_s))
        return out

    @property
    def position(self) -> int:
        """The reference group the best hypothesis is at (-1 before the first)."""
        return min(self._root, key=lambda h: h.cost).pos

    @property
    def tempo_ratio(self) -> float:
        """Performance seconds per written second on the best hypothesis (2.0 = half tempo)."""
        return min(self._root, key=lambda h: h.cost).tempo.ratio

    @property
    def unreached_groups(self) -> int:
        return max(0, self.piece.n_groups - 1 - self.stats.max_pos)

    # ---------------------------------------------------------------- internals
    def _initial_beam(self) -> list[_Hyp]:
        beam = [_Hyp(-1, Tempo(), 0.0, None)]
        for g in self.piece.bar_start_groups[1:]:
            beam.append(_Hyp(g - 1, Tempo(), COST_START_ELSEWHERE, None))
        for h in beam:
            h.step = Step("start", None, (), None, ())
        return beam

    def _decide_first(self, now_s: float) -> list[Judgement]:
        level0 = self._prune(self._expand_all(self._root, self._pending[0], first_level=True))
        beam = level0
        for pg in self._pending[1:]:
            beam = self._prune(self._expand_all(beam, pg, first_level=False))
        best = min(beam, key=lambda h: h.cost)
        chosen = best.first if best.first is not None else best
        group = self._pending.pop(0)
        self._root = level0
        return self._emit(chosen, group, now_s)

    def _expand_all(self, beam: list[_Hyp], pg: _PlayedGroup, first_level: bool) -> list[_Hyp]:
        out: list[_Hyp] = []
        for h in beam:
            for child in self._expand(h, pg):
                child.first = child if first_level else h.first
                out.append(child)
        return out

    @staticmethod
    def _prune(children: list[_Hyp]) -> list[_Hyp]:
        best: dict[int, _Hyp] = {}
        for c in children:
            cur = best.get(c.pos)
            if cur is None or c.cost < cur.cost:
                best[c.pos] = c
        kept = sorted(best.values(), key=lambda h: h.cost)[:BEAM_WIDTH]
        floor = kept[0].cost
        for h in kept:  # keep costs small; only differences matter
            h.cost -= floor
        return kept

    def _expand(self, h: _Hyp, pg: _PlayedGroup) -> list[_Hyp]:
        piece = self.piece
        n_groups = piece.n_groups
        t_played = pg.time_s
        pitches = pg.pitches
        leeway = pg.leeway
        line = h.tempo.line()
        sigma_rel = TIMING_SIGMA_REL if h.tempo.established else TIMING_SIGMA_REL_UNSURE
        pause = False
        if h.last_onset is not None:
            # a pause: silence for far longer than the next written gap (a skipped note is not one)
            gap_next = 0.0
            if line is not None and 0 <= h.pos < n_groups - 1:
                gap_next = line[1] * (piece.group_onset_s[h.pos + 1] - piece.group_onset_s[h.pos])
            pause = t_played - h.last_onset > max(PAUSE_MIN_S, PAUSE_GAP_FACTOR * gap_next)
        out: list[_Hyp] = []
        # extra: the group is not in the piece
        out.append(_Hyp(h.pos, h.tempo, h.cost + COST_EXTRA + COST_EXTRA_CHORD_NOTE * (len(pitches) - 1) + COST_EXTRA_UNEXPECTED,
                        t_played,
                        Step("extra", None, (), None, ())))
        # forward match, possibly skipping groups
        last_s = piece.group_onset_s[h.pos] if h.pos >= 0 else None
        missed_cost = 0.0
        for j in range(h.pos + 1, min(n_groups, h.pos + 2 + MAX_SKIP_GROUPS)):
            if j > h.pos + 1:
                missed_cost += COST_MISSED + COST_MISSED_CHORD_NOTE * (len(piece.groups[j - 1]) - 1)
            s_j = piece.group_onset_s[j]
            m = match_group([piece.notes[i].pitch for i in piece.groups[j]], pitches, leeway)
            exp_t: float | None = None
            timing_cost = 0.0
            gap_exp = 0.0
            hesitation = False
            if line is not None:
                exp_t = line[0] + line[1] * s_j
                ref_gap = line[1] * (s_j - last_s) if last_s is not None else 0.0
                gap_exp = ref_gap
                hesitation = t_played - exp_t > max(HESITATION_MIN_S, HESITATION_GAP_FACTOR * ref_gap)
                if hesitation:
                    timing_cost = COST_HESITATION
                else:
                    sigma = TIMING_SIGMA_ABS_S + sigma_rel * abs(ref_gap)
                    z = (t_played - exp_t) / sigma
                    timing_cost = min(TIMING_COST_CAP, 0.5 * z * z)
            if exp_t is None or hesitation or (
                h.tempo.established and abs(t_played - exp_t) > REANCHOR_DEVIATION_S
            ):
                tempo = h.tempo.reanchor(s_j, t_played)
            else:
                tempo = h.tempo.add(s_j, t_played)
            skipped = tuple(range(h.pos + 1, j))
            skipped_t = tuple(None if line is None else line[0] + line[1] * piece.group_onset_s[k]
                              for k in skipped)
            out.append(_Hyp(j, tempo, h.cost + missed_cost + m.cost + timing_cost, t_played,
                            Step("match", j, skipped, exp_t, skipped_t, h.tempo.settled and not hesitation, gap_exp)))
        # restart at an earlier bar (or the piece's start)
        if h.pos >= 0:
            cur_bar = piece.group_bar[h.pos]
            base_cost = COST_RESTART_AFTER_PAUSE if pause else COST_RESTART
            played_set = set(pitches)
            starts = piece.bar_start_groups
            lo = bisect_left(piece.bar_start_bars, cur_bar - MAX_RESTART_BARS)
            hi = bisect_right(starts, h.pos)
            for b in ((0,) if lo > 0 else ()) + starts[lo:hi]:
                if not played_set & piece.group_pitches[b] and not (
                    leeway and any(same_pitch(r, p, leeway) for r in piece.group_pitches[b] for p in played_set)
                ):
                    continue
                bars_back = cur_bar - piece.group_bar[b]
                restart_cost = base_cost + min(
                    COST_RESTART_PER_BAR * (bars_back + 1), COST_RESTART_TO_START if b == 0 else COST_RESTART_FAR)
                m = match_group([piece.notes[i].pitch for i in piece.groups[b]], pitches, leeway)
                tempo = h.tempo.reanchor(piece.group_onset_s[b], t_played)
                out.append(_Hyp(b, tempo, h.cost + restart_cost + m.cost, t_played,
                                Step("restart", b, (), None, ())))
        return out

    def _emit(self, chosen: _Hyp, pg: _PlayedGroup, now_s: float) -> list[Judgement]:
        step = chosen.step
        assert step is not None
        piece = self.piece
        evidence = pg.onset_s
        self.stats.groups_decided += 1
        out: list[Judgement] = []
        for k, exp_t in zip(step.skipped, step.skipped_expected, strict=True):
            if k > self._declared_upto:  # not already declared by the timeout
                out.extend(self._missed(k, exp_t, now_s, evidence))
        if step.kind == "extra" or step.group is None:
            nxt = chosen.pos + 1
            ref_index = piece.groups[nxt][0] if nxt < piece.n_groups else piece.groups[-1][-1]
            bar = piece.notes[ref_index].bar
            for note in sorted(pg.notes, key=lambda n: n.onset_s):
                out.append(Judgement("extra", note.onset_s, ref_index, None, note, None, None, bar,
                                     now_s, evidence))
            return out
        g = step.group
        # a restart: the chosen path relocated here, or went back past what was already judged
        restart = step.kind == "restart" or 0 <= g < self.stats.last_pos
        if restart:
            self.stats.restarts += 1
            self._declared_upto = -1
        self.stats.last_pos = g
        self.stats.max_pos = max(self.stats.max_pos, g)
        self.stats.tempo_ratios.append((pg.onset_s, chosen.tempo.ratio))
        ref_ids = piece.groups[g]
        played = sorted(pg.notes, key=lambda n: n.pitch)
        m = match_group([piece.notes[i].pitch for i in ref_ids], [n.pitch for n in played], pg.leeway)
        exp_t = step.expected_t if step.timing_basis else None
        tolerance = timing_tolerance_ms(step.gap_s)
        for verdict, pairs in (("correct", m.correct), ("wrong_pitch", m.wrong)):
            for r, p in pairs:
                ref = piece.notes[ref_ids[r]]
                note = played[p]
                timing = None if exp_t is None else (note.onset_s - exp_t) * 1000.0
                out.append(Judgement(verdict, note.onset_s, ref.index, ref.pitch, note,  # type: ignore[arg-type]
                                     exp_t, timing, ref.bar, now_s, evidence, ref.velocity, restart,
                                     tolerance))
        for r in m.missed:
            ref = piece.notes[ref_ids[r]]
            out.append(Judgement("missed", exp_t if exp_t is not None else pg.onset_s, ref.index, ref.pitch,
                                 None, exp_t, None, ref.bar, now_s, evidence, ref.velocity))
        for p in m.extra:
            note = played[p]
            out.append(Judgement("extra", note.onset_s, ref_ids[0], None, note, None, None,
                                 piece.notes[ref_ids[0]].bar, now_s, evidence))
        out.sort(key=lambda j: (j.ref_index if j.ref_index is not None else -1, j.t))
        return out

    def _missed(self, g: int, exp_t: float | None, now_s: float, evidence: float) -> list[Judgement]:
        out = []
        for i in self.piece.groups[g]:
            ref = self.piece.notes[i]
            t = exp_t if exp_t is not None else evidence
            out.append(Judgement("missed", t, ref.index, ref.pitch, None, exp_t, None, ref.bar,
                                 now_s, evidence, ref.velocity))
        return out


def _refit(a: tuple[tuple[float, float], ...], intercept: float, slope: float) -> tuple[float, float]:
    """Recency-weighted, outlier-downweighted least squares from a robust start (IRLS): follows
    drift faster than an unweighted fit while an early or late note barely moves the line."""
    n = len(a)
    recency = [TEMPO_RECENCY_DECAY ** (n - 1 - i) for i in range(n)]
    for _ in range(TEMPO_REFIT_ITERATIONS):
        w = []
        for (s, t), r in zip(a, recency, strict=True):
            res = abs(t - (intercept + slope * s))
            w.append(r * (1.0 if res <= TEMPO_HUBER_S else TEMPO_HUBER_S / res) ** 2)
        sw = sum(w)
        ms = sum(wi * s for wi, (s, _) in zip(w, a, strict=True)) / sw
        mt = sum(wi * t for wi, (_, t) in zip(w, a, strict=True)) / sw
        var = sum(wi * (s - ms) ** 2 for wi, (s, _) in zip(w, a, strict=True))
        if var <= 1e-9:
            break
        cov = sum(wi * (s - ms) * (t - mt) for wi, (s, t) in zip(w, a, strict=True))
        slope = min(TEMPO_RATIO_MAX, max(TEMPO_RATIO_MIN, cov / var))
        intercept = mt - slope * ms
    if n >= TEMPO_CURVE_MIN_ANCHORS:
        tangent = _end_tangent(a, w)
        if tangent is not None:
            return tangent
    return intercept, slope


def _end_tangent(a: tuple[tuple[float, float], ...], w: list[float]) -> tuple[float, float] | None:
    """The tangent at the newest anchor of a weighted quadratic fit: the tempo *now*, so a steady
    accelerando or ritardando is extrapolated without the lag of a straight line."""
    s0 = a[-1][0]
    m = [[0.0] * 3 for _ in range(3)]
    v = [0.0] * 3
    for wi, (s, t) in zip(w, a, strict=True):
        x = s - s0
        basis = (1.0, x, x * x)
        for i in range(3):
            v[i] += wi * basis[i] * t
            for j in range(3):
                m[i][j] += wi * basis[i] * basis[j]
    sol = _solve3(m, v)
    if sol is None:
        return None
    c0, c1, _ = sol
    if not TEMPO_RATIO_MIN <= c1 <= TEMPO_RATIO_MAX:
        return None
    return c0 - c1 * s0, c1


def _solve3(m: list[list[float]], v: list[float]) -> tuple[float, float, float] | None:
    """Solve a 3x3 linear system by Cramer's rule; None when (nearly) singular."""
    def det(x: list[list[float]]) -> float:
        return (x[0][0] * (x[1][1] * x[2][2] - x[1][2] * x[2][1])
                - x[0][1] * (x[1][0] * x[2][2] - x[1][2] * x[2][0])
                + x[0][2] * (x[1][0] * x[2][1] - x[1][1] * x[2][0]))
    d = det(m)
    if abs(d) < 1e-12:
        return None
    out = []
    for k in range(3):
        mk = [row[:] for row in m]
        for i in range(3):
            mk[i][k] = v[i]
        out.append(det(mk) / d)
    return out[0], out[1], out[2]


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    mid = n // 2
    return s[mid] if n % 2 else 0.5 * (s[mid - 1] + s[mid])


def follow_notes(piece: Piece, notes: list[PlayedNote], chunk_s: float = 0.02,
                 announce_delay_s: float = 0.03, missed_timeout_s: float | None = None) -> list[Judgement]:
    """Run a follower over a whole note list as a stream would (tests, bench): each note is added
    ``announce_delay_s`` after its onset and the follower advanced every ``chunk_s``."""
    follower = ScoreFollower(piece, missed_timeout_s)
    ordered = sorted(notes, key=lambda n: n.onset_s)
    out: list[Judgement] = []
    end = (ordered[-1].onset_s if ordered else 0.0) + 1.0
    k = 0
    n_chunks = math.ceil(end / chunk_s)
    for c in range(1, n_chunks + 1):
        now = c * chunk_s
        while k < len(ordered) and ordered[k].onset_s + announce_delay_s <= now:
            follower.add(ordered[k])
            k += 1
        out.extend(follower.advance(now))
    out.extend(follower.finish(n_chunks * chunk_s))
    return out
