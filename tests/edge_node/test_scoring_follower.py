"""The score follower on note lists: mistake classes against injected ground truth, tempo, rubato,
restarts, lost/spurious transcription notes, polyphonic groups, monotone scores and bad input."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edge_node.material import midi
from edge_node.scoring import PlayedNote, piece_from_midi, piece_from_notes
from edge_node.scoring.evaluation import Evaluation, evaluate
from edge_node.scoring.follower import follow_notes
from edge_node.scoring.mistakes import MistakePlan, Performance, perform
from edge_node.scoring.piece import Piece
from edge_node.scoring.summary import summarize
from edge_node.scoring.verdicts import HARMONIC_INTERVALS, match_group

MIN_PRECISION = 0.9
MIN_RECALL = 0.9
MIN_CLEAN_CORRECT = 0.97
LATENCY_LIMIT_S = 0.3


def _melody_piece(seed: int, n_notes: int = 60) -> Piece:
    return piece_from_midi(midi.melody(np.random.default_rng(seed), lo=55, hi=84, n_notes=n_notes).midi)


def _played(perf: Performance) -> list[PlayedNote]:
    return [PlayedNote(n.onset_s, n.pitch, n.velocity) for n in perf.notes]


def _assert_classes(ev: Evaluation, classes: tuple[str, ...] = ("wrong_pitch", "missed", "extra", "timing")) -> None:
    for cls in classes:
        k = ev.classes[cls]
        assert k.tp + k.fn > 0, cls
        assert k.precision >= MIN_PRECISION, (cls, ev.as_dict())
        assert k.recall >= MIN_RECALL, (cls, ev.as_dict())


def test_every_mistake_class_is_found_across_tempi_drift_and_restarts() -> None:
    total = Evaluation()
    restarts = []
    for seed in range(200, 216):
        rng = np.random.default_rng(seed)
        plan = MistakePlan(
            per_class=3, tempo_factor=float(rng.uniform(0.5, 1.5)), drift=float(rng.uniform(-0.2, 0.2)),
            rubato=0.0, restart=seed % 2 == 0,
        )
        perf = perform(_melody_piece(seed), seed, plan)
        ev = evaluate(perf, follow_notes(perf.piece, _played(perf)))
        total.merge(ev)
        if ev.restart_detected is not None:
            restarts.append(ev.restart_detected)
    _assert_classes(total)
    assert total.clean_accuracy >= MIN_CLEAN_CORRECT, total.as_dict()
    assert total.clean_aligned / total.clean_total >= 0.98
    assert total.max_latency_s <= LATENCY_LIMIT_S and total.late_verdicts == 0
    assert sum(restarts) >= 0.75 * len(restarts)  # the first note after a restart is usually placed


def test_missed_timeout_policy_is_early_but_reads_pauses_as_skips() -> None:
    """The two ways to call a skipped note, measured on the same performances (tuning melodies,
    every other one stopped and restarted after a pause): when the student plays past it (shipped)
    is exact but late by a note's gap; a 250 ms timeout is within 300 ms of the expected onset but
    calls the note after every pause missed. README "score events" gives the held-out figures."""
    results = {}
    for timeout in (None, 0.25):
        total = Evaluation()
        for seed in range(200, 212):
            rng = np.random.default_rng(seed)
            plan = MistakePlan(per_class=3, tempo_factor=float(rng.uniform(0.6, 1.3)), drift=0.1,
                               restart=seed % 2 == 0)
            perf = perform(_melody_piece(seed), seed, plan)
            total.merge(evaluate(perf, follow_notes(perf.piece, _played(perf), missed_timeout_s=timeout)))
        results[timeout] = total
    shipped, timed = results[None], results[0.25]
    assert shipped.classes["missed"].precision >= MIN_PRECISION and shipped.classes["missed"].recall >= MIN_RECALL
    assert np.median(shipped.missed_delay_s) > 0.3  # a note's gap + the decision lag
    assert timed.classes["missed"].recall >= MIN_RECALL
    assert np.median(timed.missed_delay_s) <= 0.3  # (the max is off by the tempo prediction)
    assert timed.classes["missed"].fp >= 6  # the note after each of the 6 pauses (at least)
    # no verdict is given twice: a timed-out group is not reported again when the student plays past it
    assert timed.classes["missed"].tp == shipped.classes["missed"].tp


@pytest.mark.parametrize("tempo_factor", [0.5, 1.5])
def test_extreme_tempi_are_followed(tempo_factor: float) -> None:
    total = Evaluation()
    for seed in range(300, 304):
        perf = perform(_melody_piece(seed), seed, MistakePlan(per_class=3, tempo_factor=tempo_factor, drift=0.1))
        total.merge(evaluate(perf, follow_notes(perf.piece, _played(perf))))
    _assert_classes(total, ("wrong_pitch", "missed", "extra"))
    assert total.clean_accuracy >= MIN_CLEAN_CORRECT, total.as_dict()


def test_rubato_keeps_the_alignment_and_pitch_verdicts() -> None:
    total = Evaluation()
    for seed in range(400, 406):
        perf = perform(_melody_piece(seed), seed, MistakePlan(per_class=3, tempo_factor=0.8, rubato=0.06))
        total.merge(evaluate(perf, follow_notes(perf.piece, _played(perf))))
    _assert_classes(total, ("wrong_pitch", "missed", "extra"))
    assert total.clean_aligned / total.clean_total >= 0.98


def test_lost_and_spurious_transcription_notes_do_not_derail_the_follower() -> None:
    aligned = total = 0
    for seed in range(500, 506):
        perf = perform(_melody_piece(seed), seed, MistakePlan(per_class=0, tempo_factor=0.9))
        rng = np.random.default_rng(seed)
        played = [n for n in _played(perf) if rng.random() > 0.04]  # the transcription loses 4 %
        for _ in range(len(played) // 25):  # and invents a few notes
            t = float(rng.uniform(played[0].onset_s, played[-1].onset_s))
            played.append(PlayedNote(t, int(rng.integers(40, 90)), 40))
        judgements = follow_notes(perf.piece, played)
        by_onset = {round(j.t, 6): j for j in judgements if j.played is not None}
        for n in perf.notes:
            j = by_onset.get(round(n.onset_s, 6))
            if j is not None:
                total += 1
                aligned += j.ref_index == n.ref_index and j.verdict == "correct"
    assert aligned / total >= 0.95


def test_polyphonic_group_matching_pairs_exact_pitches_first() -> None:
    m = match_group([60, 64, 67], [67, 60, 65])
    assert m.correct == ((0, 1), (2, 0)) and m.wrong == ((1, 2),) and not m.missed and not m.extra
    m = match_group([60, 64, 67], [60, 67])
    assert [r for r, _ in m.correct] == [0, 2] and m.missed == (1,)
    m = match_group([60, 64], [60, 64, 72])
    assert m.extra == (2,) and m.cost > 0
    assert match_group([60], [48], HARMONIC_INTERVALS).correct == ((0, 0),)
    assert match_group([60], [48]).wrong == ((0, 0),)


def test_chords_are_judged_note_by_note() -> None:
    piece = piece_from_midi(midi.chords(np.random.default_rng(7), n_chords=16, bpm=80.0).midi)
    ratio = 1.25  # played slower than written
    played: list[PlayedNote] = []
    truth: dict[int, str] = {}
    for g, ids in enumerate(piece.groups):
        t = 0.5 + piece.group_onset_s[g] * ratio
        pitches = [piece.notes[i].pitch for i in ids]
        if g == 5:  # one chord note wrong
            truth[ids[0]] = "wrong_pitch"
            pitches[0] -= 1
        if g == 8:  # one chord note not pressed
            truth[ids[-1]] = "missed"
            pitches = pitches[:-1]
        if g == 11:  # a whole chord skipped
            for i in ids:
                truth[i] = "missed"
            continue
        for k, p in enumerate(pitches):
            played.append(PlayedNote(t + 0.004 * k, p, 70))
        if g == 3:  # an extra key with the chord
            played.append(PlayedNote(t + 0.01, max(pitches) + 3, 50))
    judgements = follow_notes(piece, played)
    by_ref = {j.ref_index: j.verdict for j in judgements if j.verdict != "extra"}
    for note in piece.notes:
        assert by_ref[note.index] == truth.get(note.index, "correct"), note
    extras = [j for j in judgements if j.verdict == "extra"]
    assert len(extras) == 1 and extras[0].ref_index in piece.groups[3]


def test_more_mistakes_never_score_higher() -> None:
    for seed in range(600, 604):
        piece = _melody_piece(seed)
        plan = MistakePlan(per_class=4, tempo_factor=0.7 + 0.1 * (seed % 4), drift=0.1, restart=seed % 2 == 0)
        scores = []
        for level in range(0, 5):
            perf = perform(piece, seed, plan, level=level)
            judgements = follow_notes(piece, _played(perf))
            scores.append(summarize(piece, judgements, 60.0)["overall_score"])
        assert all(a >= b for a, b in zip(scores, scores[1:], strict=False)), scores
        assert scores[0] > scores[-1]


def test_a_performance_of_another_piece_scores_low() -> None:
    practised = _melody_piece(700)
    other = _melody_piece(701)
    perf = perform(other, 701, MistakePlan(per_class=0))
    judgements = follow_notes(practised, _played(perf))
    summary = summarize(practised, judgements, 40.0)
    assert summary["pitch_accuracy"] < 0.4
    assert summary["overall_score"] < 45
    assert any("meant to practise" in s for s in summary["feedback"])
    own = summarize(other, follow_notes(other, _played(perf)), 40.0)
    assert own["overall_score"] > 90


def test_thousands_of_notes_are_followed_at_a_bounded_cost_per_note() -> None:
    rng = np.random.default_rng(9)
    notes = []
    t = 0.0
    for _ in range(3000):
        dur = float(rng.choice([0.25, 0.5]))
        notes.append((int(rng.integers(55, 80)), t, dur * 0.9, 70))
        t += dur
    piece = piece_from_notes(notes, bpm=120.0)
    perf = perform(piece, 9, MistakePlan(per_class=20, tempo_factor=0.9, drift=0.1))
    played = _played(perf)
    start = time.perf_counter()
    judgements = follow_notes(piece, played)
    per_note_s = (time.perf_counter() - start) / len(played)
    ev = evaluate(perf, judgements)
    assert per_note_s < 0.05  # no blow-up with the piece's length (bench: ~2.5 ms per note)
    assert ev.clean_accuracy >= MIN_CLEAN_CORRECT
    _assert_classes(ev, ("wrong_pitch", "missed", "extra"))


def test_summary_names_bars_and_notes_to_practise() -> None:
    piece = _melody_piece(800)
    perf = perform(piece, 800, MistakePlan(per_class=3, tempo_factor=0.8))
    summary = summarize(piece, follow_notes(piece, _played(perf)), 50.0)
    text = " ".join(summary["feedback"])
    assert "Notes to practise:" in text and "bar" in text
    assert 0.0 <= summary["pitch_accuracy"] < 1.0 and 0.0 <= summary["rhythm_accuracy"] < 1.0
    assert summary["notes_played"] == len(perf.notes)


def test_no_notes_gives_an_empty_but_valid_summary() -> None:
    piece = _melody_piece(801)
    assert follow_notes(piece, []) == []
    summary = summarize(piece, [], 10.0)
    assert summary["overall_score"] == 0.0 and summary["notes_played"] == 0
