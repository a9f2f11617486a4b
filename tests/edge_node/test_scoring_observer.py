"""ScoreObserver as a pipeline observer: which note events it follows, chords from the model, the
summary at the end, and garbage that must not crash a session."""

from __future__ import annotations

from typing import Any

import pytest

from edge_node.scoring import ScoreObserver, piece_from_notes
from edge_node.scoring.follower import DECISION_LAG_S

CHUNK_S = 0.02


def _note(t: float, pitch: int, note_id: int, source: str = "model", end: float | None = None) -> dict[str, Any]:
    return {"type": "note", "seq": 0, "t": t, "note_id": note_id, "pitch": pitch, "velocity": 70,
            "end": end, "confidence": 0.9, "source": source}


def _run(observer: ScoreObserver, timeline: list[tuple[float, dict[str, Any]]], end_s: float) -> list[tuple]:
    """Deliver each event in the chunk in which it is announced; collect what the observer emits."""
    out: list[tuple] = []
    timeline = sorted(timeline, key=lambda x: x[0])
    k = 0
    now = 0.0
    while now < end_s:
        now = round(now + CHUNK_S, 6)
        batch = []
        while k < len(timeline) and timeline[k][0] <= now:
            batch.append(timeline[k][1])
            k += 1
        out.extend((now, *e) for e in observer.observe(batch, now))
    out.extend((now, *e) for e in observer.finish(now))
    return out


def _chord_piece() -> Any:
    # three chords of three notes, one second apart at the written tempo
    notes = [(p, float(i), 0.9, 64) for i, chord in enumerate(([60, 64, 67], [62, 65, 69], [64, 67, 71]))
             for p in chord]
    return piece_from_notes(notes, bpm=60.0)


def test_model_chords_are_judged_per_key_and_kernel_notes_are_ignored_meanwhile() -> None:
    piece = _chord_piece()
    timeline = []
    nid = 0
    for i, chord in enumerate(([60, 64, 67], [62, 65, 70], [64, 67])):  # one wrong key, one missing
        t = 0.5 + i * 1.2
        for p in chord:
            timeline.append((t + 0.12, _note(t + 0.002 * (p % 3), p, nid)))  # model notes come late
            nid += 1
        timeline.append((t + 0.03, _note(t, chord[0] + 1, 1000 + i, source="kernel")))  # ignored
        timeline.append((t + 0.5, _note(t, chord[0], nid - 1, end=t + 0.5)))  # the note's end: ignored
    out = _run(ScoreObserver(piece), timeline, 5.0)
    scores = [fields for _, type_, _, fields in out if type_ == "score"]
    verdicts = {f["ref_index"]: f["verdict"] for f in scores}
    assert verdicts == {0: "correct", 1: "correct", 2: "correct", 3: "correct", 4: "correct",
                        5: "wrong_pitch", 6: "correct", 7: "correct", 8: "missed"}
    assert all(f["timing"] is None for f in scores)  # three chords are too few for a tempo line
    summary = [fields for _, type_, _, fields in out if type_ == "summary"]
    assert len(summary) == 1 and summary[0]["notes_played"] == 8
    assert summary[0]["pitch_accuracy"] == pytest.approx(7 / 9, abs=1e-4)


def test_score_events_come_once_the_decision_lag_has_passed() -> None:
    piece = piece_from_notes([(60 + i, i * 0.5, 0.4, 64) for i in range(8)], bpm=120.0)
    timeline = [(0.5 + i * 0.5 + 0.03, _note(0.5 + i * 0.5, 60 + i, i, source="kernel")) for i in range(8)]
    out = _run(ScoreObserver(piece), timeline, 6.0)
    for now, type_, t, fields in out:
        if type_ == "score":
            assert fields["verdict"] == "correct"
            assert DECISION_LAG_S <= now - t <= DECISION_LAG_S + CHUNK_S + 1e-9


def test_garbage_events_do_not_crash_the_observer() -> None:
    piece = piece_from_notes([(60, 0.0, 0.5, 64), (62, 0.5, 0.5, 64)], bpm=120.0)
    observer = ScoreObserver(piece)
    garbage: list[dict[str, Any]] = [
        {"type": "note", "t": 0.1},  # no pitch
        {"type": "note", "t": 0.2, "pitch": "high", "end": None},
        {"type": "note", "t": 0.3, "pitch": None, "end": None},
        {"type": "pitch", "t": 0.3, "midi": None, "confidence": None},
        {"type": "tempo", "t": 0.3, "bpm": 90.0},
        {"type": "note", "t": 0.4, "pitch": 60, "velocity": None, "end": None, "note_id": 1, "source": "kernel"},
    ]
    out = list(observer.observe(garbage, 0.5))
    out += list(observer.observe([], 1.0))
    out += list(observer.finish(1.0))
    assert out[-1][0] == "summary"
    assert list(observer.finish(2.0)) == []  # finishing twice is harmless
