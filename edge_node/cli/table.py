"""The human ``--format table`` view of ``analyze``/``client``: a live feed of what matters.

Notes, onsets, tempo changes, verdicts and the summary are printed as they arrive; the chatty
per-chunk streams are thinned (``pitch`` only when the nearest note changes, ``dynamics`` once a
second). When stdout is a terminal and the audio is long, a progress bar is kept on stderr.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from ..events import Event

NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
DYNAMICS_EVERY_S = 1.0
PROGRESS_MIN_DURATION_S = 30.0
PROGRESS_EVERY_S = 0.2
BAR_WIDTH = 30


def note_name(midi: float) -> str:
    n = int(round(midi))
    return f"{NOTE_NAMES[n % 12]}{n // 12 - 1}"


class TableWriter:
    """Formats events as aligned rows: ``time  event  detail``."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout
        self._last_pitch: int | None = None
        self._next_dynamics_t = 0.0
        self._last_tempo: float | None = None
        self._header_done = False

    def write(self, event: Event) -> None:
        detail = self._detail(event)
        if detail is None:
            return
        if not self._header_done:
            self.out.write(f"{'time':>8}  {'event':<9} detail\n")
            self._header_done = True
        self.out.write(f"{event['t']:8.3f}  {event['type']:<9} {detail}\n")

    def _detail(self, e: Event) -> str | None:
        kind = e["type"]
        if kind == "onset":
            return f"strength {e['strength']:.1f}"
        if kind == "note":
            name = note_name(e["pitch"])
            if e.get("end") is not None:
                return f"{name:<4} ({e['pitch']}) ended at {e['end']:.3f}s"
            return f"{name:<4} ({e['pitch']}) vel {e['velocity']:>3}  conf {e['confidence']:.2f}  [{e['source']}]"
        if kind == "pitch":
            nearest = int(round(e["midi"]))
            if nearest == self._last_pitch:
                return None
            self._last_pitch = nearest
            cents = (e["midi"] - nearest) * 100
            return f"{e['f0_hz']:8.2f} Hz  {note_name(e['midi']):<4} {cents:+4.0f} c  conf {e['confidence']:.2f}"
        if kind == "dynamics":
            if e["t"] < self._next_dynamics_t:
                return None
            self._next_dynamics_t = e["t"] + DYNAMICS_EVERY_S
            meter = "#" * max(0, int((e["rms_dbfs"] + 60) / 3))
            return f"{e['rms_dbfs']:6.1f} dBFS  vel~{e['velocity']:>3} {meter}"
        if kind == "tempo":
            if self._last_tempo is not None and abs(e["bpm"] - self._last_tempo) < 1.0:
                return None
            self._last_tempo = e["bpm"]
            return f"{e['bpm']:.1f} BPM  conf {e['confidence']:.2f}"
        if kind == "score":
            timing = "" if e.get("timing_ms") is None else f" {e['timing_ms']:+.0f} ms"
            played = "-" if e.get("played_pitch") is None else note_name(e["played_pitch"])
            return f"#{e['ref_index']} {e['verdict']:<11} expected {note_name(e['expected_pitch'])} played {played}{timing}"
        if kind == "summary":
            keys = ("pitch_accuracy", "rhythm_accuracy", "dynamics_range", "overall_score", "notes_played", "duration_s")
            return "  ".join(f"{k}={_fmt(e.get(k))}" for k in keys)
        if kind == "mode":
            return f"{e['mode']} ({e['reason']})"
        if kind == "error":
            return f"{e['code']}: {e['message']}"
        return " ".join(f"{k}={v}" for k, v in e.items() if k not in ("type", "seq", "t"))


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


class Progress:
    """A one-line progress bar on stderr, redrawn at most every ``PROGRESS_EVERY_S`` of wall time."""

    def __init__(self, total_s: float | None, err: IO[str] | None = None, enabled: bool | None = None) -> None:
        self.err = err or sys.stderr
        self.total_s = total_s
        if enabled is None:
            enabled = bool(total_s and total_s >= PROGRESS_MIN_DURATION_S and self.err.isatty())
        self.enabled = enabled
        self._last_draw = 0.0
        self._started = time.monotonic()

    def update(self, done_s: float) -> None:
        if not self.enabled or not self.total_s:
            return
        now = time.monotonic()
        if now - self._last_draw < PROGRESS_EVERY_S:
            return
        self._last_draw = now
        frac = min(1.0, done_s / self.total_s)
        filled = int(frac * BAR_WIDTH)
        speed = done_s / max(now - self._started, 1e-6)
        self.err.write(
            f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {frac * 100:5.1f}%  "
            f"{done_s:7.1f}/{self.total_s:.1f} s  {speed:6.0f}x real time"
        )
        self.err.flush()

    def close(self) -> None:
        if self.enabled:
            self.err.write("\r" + " " * (BAR_WIDTH + 50) + "\r")
            self.err.flush()
