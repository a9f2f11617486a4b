"""The end-of-session ``summary``: accuracy figures and feedback sentences, from the verdicts alone.

Definitions (also in README "Score following"), over every verdict of the session (a passage played
twice after a restart counts twice):

- ``pitch_accuracy`` = correct / (correct + wrong_pitch + missed + extra): every kind of note mistake
  lowers it, extra notes included.
- ``rhythm_accuracy`` = on-time matched notes / (matched notes with a timing basis + missed notes): a
  missed note is never on time; notes without a tempo basis yet (the first notes, the first note
  after a restart) are left out.
- ``dynamics_range`` = the spread of played velocities, 90th minus 10th percentile (MIDI velocity
  units); ``dynamics_range_ref`` is the same for the written notes that were judged.
- ``overall_score`` = 100 x (0.7 x pitch_accuracy + 0.3 x rhythm_accuracy). Dynamics are reported but
  not scored: the transcription's velocity is not calibrated to the score's, and a different shading
  is an interpretation, not a mistake. With this definition every extra mistake lowers the score.

The feedback text is made here from the verdicts (no external service): uneven bars, the notes
missed or wrong most often, restarts, the tempo played against the written one.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from .piece import Piece
from .verdicts import Judgement

PITCH_WEIGHT = 0.7
RHYTHM_WEIGHT = 0.3
UNEVEN_BAR_SPREAD_MS = 60.0  # a bar whose timing deviations spread (std) more than this is uneven
MAX_LISTED = 3  # bars or notes named in one feedback sentence
LOW_MATCH_ACCURACY = 0.4  # below this pitch accuracy the student may be playing another piece
NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def note_name(pitch: int) -> str:
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def summarize(
    piece: Piece,
    judgements: Sequence[Judgement],
    duration_s: float,
    restarts: int = 0,
    tempo_ratios: Sequence[tuple[float, float]] = (),
    unreached_groups: int = 0,
) -> dict[str, Any]:
    """The ``summary`` event fields (DESIGN.md) plus ``feedback`` sentences and the counts behind them."""
    counts = Counter(j.verdict for j in judgements)
    correct, wrong, missed, extra = (counts[v] for v in ("correct", "wrong_pitch", "missed", "extra"))
    judged = correct + wrong + missed + extra
    pitch_accuracy = correct / judged if judged else 0.0
    timed = [j for j in judgements if j.verdict in ("correct", "wrong_pitch") and j.timing is not None]
    on_time = sum(j.timing == "on_time" for j in timed)
    rhythm_den = len(timed) + missed
    rhythm_accuracy = on_time / rhythm_den if rhythm_den else 0.0
    played = [j.played.velocity for j in judgements if j.played is not None]
    ref_vel = [j.ref_velocity for j in judgements if j.ref_velocity is not None and j.verdict != "missed"]
    dynamics_range = _spread(played)
    overall = 100.0 * (PITCH_WEIGHT * pitch_accuracy + RHYTHM_WEIGHT * rhythm_accuracy) if judged else 0.0
    fields: dict[str, Any] = {
        "pitch_accuracy": round(pitch_accuracy, 4),
        "rhythm_accuracy": round(rhythm_accuracy, 4),
        "dynamics_range": round(dynamics_range, 1),
        "overall_score": round(overall, 1),
        "notes_played": correct + wrong + extra,
        "duration_s": round(duration_s, 3),
        "dynamics_range_ref": round(_spread(ref_vel), 1),
        "counts": {"correct": correct, "wrong_pitch": wrong, "missed": missed, "extra": extra,
                   "early": sum(j.timing == "early" for j in timed), "late": sum(j.timing == "late" for j in timed)},
        "restarts": restarts,
        "piece": piece.name,
    }
    fields["feedback"] = _feedback(piece, judgements, fields, restarts, tempo_ratios, unreached_groups)
    return fields


def _spread(values: Sequence[int]) -> float:
    if len(values) < 2:
        return 0.0
    p10, p90 = np.percentile(np.asarray(values, dtype=float), [10, 90])
    return float(p90 - p10)


def _feedback(
    piece: Piece,
    judgements: Sequence[Judgement],
    fields: dict[str, Any],
    restarts: int,
    tempo_ratios: Sequence[tuple[float, float]],
    unreached_groups: int,
) -> list[str]:
    out: list[str] = []
    c = fields["counts"]
    judged = c["correct"] + c["wrong_pitch"] + c["missed"] + c["extra"]
    if not judged:
        return ["No notes were heard, so there is nothing to compare with the piece yet."]
    if fields["pitch_accuracy"] < LOW_MATCH_ACCURACY and judged >= 8:
        out.append("Very few notes matched the piece: is this the piece you meant to practise?")
    out.append(
        f"{c['correct']} notes right, {c['wrong_pitch']} wrong, {c['missed']} missed, {c['extra']} extra "
        f"({fields['pitch_accuracy']:.0%} pitch accuracy, {fields['rhythm_accuracy']:.0%} in time)."
    )
    # notes missed or wrong most often (a note practised several times counts each time)
    trouble: Counter[int] = Counter(
        j.ref_index for j in judgements if j.verdict in ("missed", "wrong_pitch") and j.ref_index is not None
    )
    if trouble:
        items = []
        for ref_index, n in trouble.most_common(MAX_LISTED):
            ref = piece.notes[ref_index]
            times = f" ({n} times)" if n > 1 else ""
            items.append(f"{note_name(ref.pitch)} in bar {ref.bar}{times}")
        out.append("Notes to practise: " + ", ".join(items) + ".")
    missed_pitches = Counter(j.expected_pitch for j in judgements if j.verdict == "missed" and j.expected_pitch)
    if missed_pitches and missed_pitches.most_common(1)[0][1] >= 2:
        p, n = missed_pitches.most_common(1)[0]
        out.append(f"The note missed most is {note_name(p)} ({n} times).")
    # uneven bars: spread of timing deviations within a bar, and its mean (rushing/dragging)
    by_bar: dict[int, list[float]] = defaultdict(list)
    for j in judgements:
        if j.timing_ms is not None and j.bar is not None and j.verdict in ("correct", "wrong_pitch"):
            by_bar[j.bar].append(j.timing_ms)
    uneven = []
    for bar, devs in by_bar.items():
        if len(devs) >= 2:
            spread = float(np.std(devs))
            if spread > UNEVEN_BAR_SPREAD_MS or any(abs(d) >= 80 for d in devs):
                uneven.append((max(spread, max(abs(d) for d in devs) / 2), bar, float(np.mean(devs))))
    if uneven:
        uneven.sort(reverse=True)
        names = []
        for _, bar, mean in sorted(uneven[:MAX_LISTED], key=lambda u: u[1]):
            tendency = " (rushing)" if mean < -30 else " (dragging)" if mean > 30 else ""
            names.append(f"{bar}{tendency}")
        out.append("Uneven rhythm in bar" + ("s " if len(names) > 1 else " ") + ", ".join(names) + ".")
    elif fields["rhythm_accuracy"] >= 0.9:
        out.append("The rhythm was even throughout.")
    if tempo_ratios:
        ratios = [r for _, r in tempo_ratios]
        first = float(np.median(ratios[: max(1, len(ratios) // 4)]))
        last = float(np.median(ratios[-max(1, len(ratios) // 4):]))
        mid = float(np.median(ratios))
        played_bpm = piece.bpm / mid if mid > 0 else piece.bpm
        sentence = f"Tempo: about {played_bpm:.0f} BPM against the written {piece.bpm:.0f} ({1 / mid:.0%})"
        if last < first * 0.92:
            sentence += ", speeding up towards the end"
        elif last > first * 1.08:
            sentence += ", slowing down towards the end"
        out.append(sentence + ".")
    if restarts:
        bars = sorted({j.bar for j in judgements if j.restart and j.bar is not None})
        where = f" from bar{'s' if len(bars) > 1 else ''} {', '.join(map(str, bars))}" if bars else ""
        times = "once" if restarts == 1 else f"{restarts} times"
        out.append(f"Restarted {times}{where}.")
    if unreached_groups > 0 and judged:
        last_bar = max((j.bar for j in judgements if j.bar is not None), default=1)
        out.append(f"Stopped in bar {last_bar} of {piece.n_bars}.")
    if fields["dynamics_range"] < 10 and fields["dynamics_range_ref"] >= 20:
        out.append("Dynamics were flat: the piece asks for more contrast between soft and loud.")
    return out
