"""The score follower as a pipeline :class:`~edge_node.pipeline.Observer`.

``ScoreObserver(piece)`` takes the ``note`` events of each processed chunk, feeds their onsets to a
:class:`~.follower.ScoreFollower`, and returns a ``score`` event for every verdict decided by then
(within ``DECISION_LAG_S`` + one chunk of the judged onset), and a ``summary`` at :meth:`finish`.

Sources: light mode announces ``kernel`` notes, detailed mode ``model`` notes (possibly both while
switching). A kernel note's pitch is re-read from the ``pitch`` stream over its settled part (the
kernel's own pitch is kept when that is too short to read), and matched with some leeway for the
tracker's typical (sub)harmonic errors (:data:`~.verdicts.HARMONIC_INTERVALS`): such a match costs
more than an exact one, so octave leaps, skips and restarts still win when the timing says so. While ``model`` notes come (one
within ``MODEL_SILENCE_S`` of a kernel note, even one announced after it but before the kernel note is
released), ``kernel`` notes are dropped, so the same onset is not judged twice.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

from ..events import Event
from .follower import ScoreFollower
from .piece import Piece
from .summary import summarize
from .verdicts import Judgement, PlayedNote, score_fields

Emitted = tuple[str, float, dict[str, Any]]
MODEL_SILENCE_S = 3.0
# Kernel notes name their pitch 15 ms after the onset, when the previous note may still ring; the
# ``pitch`` stream over the settled part of the note is surer. A kernel note's pitch is re-read as
# the most common rounded ``pitch`` over [onset + start, min(onset + end, next onset - margin)].
REFINE_START_S = 0.08
REFINE_END_S = 0.22  # + PITCH_EVENT_HALF_WINDOW_S stays inside the follower's DECISION_LAG_S
REFINE_MARGIN_S = 0.01
REFINE_MIN_FRAMES = 2
REFINE_MIN_CONFIDENCE = 0.5
PITCH_EVENT_HALF_WINDOW_S = 0.011  # a pitch event at t is emitted about this long after t
PITCH_HISTORY_S = 2.0
# A kernel note whose settled part reads one pitch this clearly loses the octave leeway (an octave
# off is then the student's slip, see verdicts.HARMONIC_INTERVALS); a short or split reading keeps it.
REFINE_SURE_FRAMES = 4
REFINE_SURE_SHARE = 0.8


class ScoreObserver:
    """Follows one session against ``piece``; plug into ``StreamingPipeline(observers=[...])``."""

    def __init__(self, piece: Piece) -> None:
        self.piece = piece
        self.follower = ScoreFollower(piece)
        self.judgements: list[Judgement] = []
        self._last_model_note_s: float | None = None
        self._seen_ids: set[tuple[str, Any]] = set()
        self._pitch_frames: deque[tuple[float, int]] = deque()
        self._refining: list[PlayedNote] = []
        self._finished = False

    def observe(self, events: list[Event], now_s: float) -> Iterable[Emitted]:
        for e in events:
            if e.get("type") == "pitch":
                if float(e.get("confidence") or 0.0) >= REFINE_MIN_CONFIDENCE and e.get("midi") is not None:
                    self._pitch_frames.append((float(e["t"]), round(float(e["midi"]))))
                continue
            if e.get("type") != "note" or e.get("end") is not None:
                continue
            source = str(e.get("source", "kernel"))
            key = (source, e.get("note_id"))
            if e.get("note_id") is not None:
                if key in self._seen_ids:
                    continue
                self._seen_ids.add(key)
            t = float(e["t"])
            if source == "model":
                self._last_model_note_s = t if self._last_model_note_s is None else max(t, self._last_model_note_s)
            elif self._model_recent(t):
                continue
            try:
                pitch = int(e["pitch"])
                velocity = int(e.get("velocity") or 64)
            except (KeyError, TypeError, ValueError):
                continue
            note = PlayedNote(t, pitch, velocity, e.get("note_id"), harmonic_ambiguous=source == "kernel")
            if source == "kernel":
                self._refining.append(note)
            else:
                self.follower.add(note)
        self._release_refined(now_s, final=False)
        while self._pitch_frames and self._pitch_frames[0][0] < now_s - PITCH_HISTORY_S:
            self._pitch_frames.popleft()
        return self._events(self.follower.advance(now_s))

    def _model_recent(self, t: float) -> bool:
        last = self._last_model_note_s
        return last is not None and abs(t - last) < MODEL_SILENCE_S

    def _release_refined(self, now_s: float, final: bool) -> None:
        """Hand kernel notes to the follower once their refinement window has been heard."""
        self._refining.sort(key=lambda n: n.onset_s)
        while self._refining:
            note = self._refining[0]
            nxt = self._refining[1].onset_s if len(self._refining) > 1 else None
            end = note.onset_s + REFINE_END_S
            if nxt is not None:
                end = min(end, nxt - REFINE_MARGIN_S)
            if not final and now_s < end + PITCH_EVENT_HALF_WINDOW_S:
                break
            self._refining.pop(0)
            if self._model_recent(note.onset_s):  # model notes arrived meanwhile: they speak for it
                continue
            start = note.onset_s + REFINE_START_S
            frames = [p for t, p in self._pitch_frames if start <= t <= end]
            if len(frames) >= REFINE_MIN_FRAMES:
                pitch, votes = Counter(frames).most_common(1)[0]
                sure = len(frames) >= REFINE_SURE_FRAMES and votes >= REFINE_SURE_SHARE * len(frames)
                note = PlayedNote(note.onset_s, pitch, note.velocity, note.note_id, note.harmonic_ambiguous, sure)
            self.follower.add(note)

    def finish(self, now_s: float) -> Iterable[Emitted]:
        if self._finished:
            return []
        self._finished = True
        self._release_refined(now_s, final=True)
        out = self._events(self.follower.finish(now_s))
        stats = self.follower.stats
        fields = summarize(
            self.piece, self.judgements, now_s, restarts=stats.restarts,
            tempo_ratios=stats.tempo_ratios, unreached_groups=self.follower.unreached_groups,
        )
        out.append(("summary", now_s, fields))
        return out

    def _events(self, judgements: list[Judgement]) -> list[Emitted]:
        self.judgements.extend(judgements)
        return [("score", j.t, score_fields(j)) for j in judgements]
