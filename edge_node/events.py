"""The feedback event schema of DESIGN.md, and the per-session sequencer that stamps ``seq``.

Every event is a plain JSON-ready ``dict`` with ``type``, ``seq`` (strictly increasing from 0 per
session) and ``t`` (seconds of session audio, from the sample index). Extensions beyond DESIGN.md:

- ``note`` events carry ``note_id``. A note is announced once with ``end: null`` as soon as its onset
  and pitch are certain, and announced again with the same ``note_id`` and ``end`` set when it stops
  sounding. A consumer that wants finished notes keeps the last event per ``note_id``.
"""

from __future__ import annotations

import json
from typing import Any, Literal

Event = dict[str, Any]
EventType = Literal[
    "onset", "note", "pitch", "dynamics", "tempo", "mode", "score", "summary", "error"
]
EVENT_TYPES: tuple[str, ...] = (
    "onset", "note", "pitch", "dynamics", "tempo", "mode", "score", "summary", "error",
)
NOTE_SOURCES = ("kernel", "model")
VERDICTS = ("correct", "wrong_pitch", "missed", "extra")


class Sequencer:
    """Stamps ``seq`` on the events of one session, in emission order."""

    __slots__ = ("next_seq",)

    def __init__(self, start: int = 0) -> None:
        self.next_seq = start

    def make(self, type_: str, t: float, **fields: Any) -> Event:
        event: Event = {"type": type_, "seq": self.next_seq, "t": round(float(t), 6)}
        event.update(fields)
        self.next_seq += 1
        return event


def to_json(event: Event) -> str:
    """Compact JSON for the data channel and ``analyze --format jsonl``."""
    return json.dumps(event, separators=(",", ":"), allow_nan=False)
