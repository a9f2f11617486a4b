"""Score following: accuracy per mistake class on the held-out set, and the follower's cost per note.

    python bench/bench_scoring.py [--out bench/results/scoring.json] [--quick]

Held-out set (never tuned on): the melody voice of ``accented_piece`` and ``scale`` runs, rendered
with the TimGM6mb soundfont, played at 0.6x-1.3x the written tempo with gradual drift, every other
performance restarted from an earlier bar, with injected wrong pitches, skipped notes, extra notes
and notes 80-140 ms early/late (``edge_node.scoring.evaluation.heldout_performance``). Each one goes
through the real light-mode pipeline (kernels + ``ScoreObserver``). Reported per class: precision
and recall; for clean notes the share marked correct; verdict latency; how many false verdicts fell
on notes the transcription misheard (so kernel-caused losses are visible). The same performances as
note lists (perfect transcription) isolate the follower. Cost: follower time per played note.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_node.scoring.evaluation import (
    HELDOUT_SEEDS,
    HELDOUT_SOUNDFONT,
    Evaluation,
    evaluate,
    follow_audio,
    heldout_performance,
)
from edge_node.scoring.follower import follow_notes
from edge_node.scoring.mistakes import MistakePlan, Performance, perform
from edge_node.scoring.piece import piece_from_notes
from edge_node.scoring.verdicts import PlayedNote

QUICK_SEEDS = range(1000, 1004)
COST_PIECE_NOTES = 2000


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def played(perf: Performance) -> list[PlayedNote]:
    return [PlayedNote(n.onset_s, n.pitch, n.velocity) for n in perf.notes]


def accuracy(seeds: range) -> dict[str, Any]:
    audio_total = Evaluation()
    notes_total = Evaluation()
    per_family: dict[str, Evaluation] = {}
    restarts: list[bool] = []
    monotone: list[bool] = []
    for seed in seeds:
        perf = heldout_performance(seed)
        observer = follow_audio(perf, HELDOUT_SOUNDFONT, seed=seed)
        ev = evaluate(perf, observer.judgements)
        audio_total.merge(ev)
        per_family.setdefault(perf.piece.name, Evaluation()).merge(ev)
        notes_total.merge(evaluate(perf, follow_notes(perf.piece, played(perf))))
        if ev.restart_detected is not None:
            restarts.append(ev.restart_detected)
        summaries = []
        for level in (0, 1, 3):
            obs = observer if level == 3 else follow_audio(heldout_performance(seed, level=level), HELDOUT_SOUNDFONT,
                                                           seed=seed)
            summaries.append([e for e in obs.events if e["type"] == "summary"][0]["overall_score"])
        monotone.append(all(a >= b for a, b in zip(summaries, summaries[1:], strict=False)))
        log(f"seed {seed} {perf.piece.name}: {json.dumps(ev.as_dict()['classes'])} scores by level {summaries}")
    return {
        "performances": len(list(seeds)),
        "audio": audio_total.as_dict(),
        "audio_by_family": {k: v.as_dict() for k, v in per_family.items()},
        "note_lists": notes_total.as_dict(),
        "restarts_recognised": f"{sum(restarts)}/{len(restarts)}",
        "more_mistakes_never_score_higher": f"{sum(monotone)}/{len(monotone)} (levels 0, 1, 3 per class)",
    }


def octave_slips(seeds: range) -> dict[str, Any]:
    """The same held-out performances with every wrong pitch an octave slip, through the audio path:
    the light-mode tracker's harmonic leeway must not forgive a clearly heard octave."""
    total = Evaluation()
    for seed in seeds:
        perf = heldout_performance(seed, octave_slips=True)
        total.merge(evaluate(perf, follow_audio(perf, HELDOUT_SOUNDFONT, seed=seed).judgements))
    d = total.as_dict()
    out = {"wrong_pitch": d["classes"]["wrong_pitch"], "clean_marked_correct": d["clean_marked_correct"],
           "transcription_pitch_errors": d["transcription_pitch_errors"]}
    log(f"octave slips: {json.dumps(out)}")
    return out


MISSED_TIMEOUT_S = 0.25  # the alternative policy: a group 250 ms overdue with nothing played is missed


def missed_policies(seeds: range) -> dict[str, Any]:
    """When to call a skipped note: the shipped policy (when the student plays past it) against a
    timeout (its expected onset 250 ms overdue with nothing played), on the held-out note lists."""
    out: dict[str, Any] = {}
    for name, timeout in (("when_played_past", None), (f"timeout_{int(MISSED_TIMEOUT_S * 1000)}ms", MISSED_TIMEOUT_S)):
        total = Evaluation()
        for seed in seeds:
            perf = heldout_performance(seed)
            total.merge(evaluate(perf, follow_notes(perf.piece, played(perf), missed_timeout_s=timeout)))
        d = total.as_dict()
        out[name] = {"missed": d["classes"]["missed"], "clean_marked_correct": d["clean_marked_correct"],
                     "missed_decided_after_expected_s": d["missed_decided_after_expected_s"]}
        log(f"missed policy {name}: {json.dumps(out[name])}")
    return out


def cost() -> dict[str, Any]:
    rng = np.random.default_rng(5)
    notes = []
    t = 0.0
    for _ in range(COST_PIECE_NOTES):
        dur = float(rng.choice([0.25, 0.5]))
        notes.append((int(rng.integers(55, 80)), t, dur * 0.9, 70))
        t += dur
    piece = piece_from_notes(notes, bpm=120.0)
    perf = perform(piece, 5, MistakePlan(per_class=15, tempo_factor=0.9, drift=0.1, restart=True))
    notes_played = played(perf)
    start = time.perf_counter()
    follow_notes(piece, notes_played)
    elapsed = time.perf_counter() - start
    return {
        "piece_notes": COST_PIECE_NOTES,
        "played_notes": len(notes_played),
        "ms_per_note": round(1000 * elapsed / len(notes_played), 3),
        "total_s": round(elapsed, 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results/scoring.json"))
    ap.add_argument("--quick", action="store_true", help="4 held-out performances instead of 20")
    args = ap.parse_args()
    seeds = QUICK_SEEDS if args.quick else HELDOUT_SEEDS
    result = {
        "bench": "scoring",
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()},
        "heldout": accuracy(seeds),
        "missed_policies": missed_policies(seeds),
        "octave_slips_audio": octave_slips(seeds),
        "follower_cost": cost(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
