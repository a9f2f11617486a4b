"""Note decoding: per-frame model probabilities → notes, causally, one frame at a time.

A key starts a note on the rising edge of its onset probability (first frame at or above
``onset_threshold``; it must fall below again before the key can re-trigger), takes its velocity from
the velocity head on that frame, and ends on the first later frame whose frame probability is below
``frame_threshold`` (or when the same key is struck again). Each decision uses only the frame in hand,
so a note is announced on the frame the model becomes sure of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .features import HOP_S
from .model import HEAD_FRAME, HEAD_ONSET, HEAD_VELOCITY, LOWEST_KEY_MIDI, N_KEYS

DEFAULT_ONSET_THRESHOLD = 0.5
DEFAULT_FRAME_THRESHOLD = 0.5
ONSET_BIAS_S = 0.5 * HOP_S  # an onset is somewhere inside its frame: report the frame's middle
MIN_NOTE_S = 0.03  # a note is never reported shorter than this


@dataclass
class DecodedNote:
    """A note as the decoder knows it; ``end_s`` is None while it sounds."""

    note_id: int
    pitch: int
    onset_s: float
    velocity: int
    confidence: float
    end_s: float | None = None


@dataclass
class NoteDecoder:
    """Streaming decoder state of one session."""

    onset_threshold: float = DEFAULT_ONSET_THRESHOLD
    frame_threshold: float = DEFAULT_FRAME_THRESHOLD
    origin_s: float = 0.0  # session time of label frame 0
    next_note_id: int = 0
    frame_index: int = 0  # label frame the next pushed row describes
    _armed: np.ndarray = field(default_factory=lambda: np.ones(N_KEYS, dtype=bool))
    _active: dict[int, DecodedNote] = field(default_factory=dict)

    def push(self, probs: np.ndarray) -> list[DecodedNote]:
        """Decode rows ``(T, N_HEADS, N_KEYS)`` in order; returns notes started or ended, in order
        (a started note has ``end_s`` None; an ended one is returned again with ``end_s`` set)."""
        out: list[DecodedNote] = []
        for row in probs:
            self._frame(row, out)
            self.frame_index += 1
        return out

    def close_all(self) -> list[DecodedNote]:
        """End every sounding note at the current time (end of the stream)."""
        t = self.origin_s + self.frame_index * HOP_S
        return [self._end(k, t) for k in sorted(self._active)]

    def _frame(self, row: np.ndarray, out: list[DecodedNote]) -> None:
        t_frame = self.origin_s + self.frame_index * HOP_S
        onset = row[HEAD_ONSET]
        frame = row[HEAD_FRAME]
        # ends first: a key whose frame probability dropped stops at the start of this frame
        for k in [k for k, n in self._active.items() if frame[k] < self.frame_threshold]:
            if t_frame - self._active[k].onset_s >= MIN_NOTE_S:
                out.append(self._end(k, t_frame))
        hits = np.nonzero((onset >= self.onset_threshold) & self._armed)[0]
        self._armed = onset < self.onset_threshold
        for hit in hits:
            k = int(hit)
            t_on = t_frame + ONSET_BIAS_S
            if k in self._active:
                out.append(self._end(k, t_on))
            vel = int(np.clip(round(float(row[HEAD_VELOCITY, k]) * 127.0), 1, 127))
            note = DecodedNote(self.next_note_id, k + LOWEST_KEY_MIDI, t_on, vel, float(onset[k]))
            self.next_note_id += 1
            self._active[k] = note
            out.append(DecodedNote(note.note_id, note.pitch, note.onset_s, note.velocity, note.confidence))

    def _end(self, key: int, t: float) -> DecodedNote:
        note = self._active.pop(key)
        note.end_s = max(t, note.onset_s + MIN_NOTE_S)
        return note


def decode_offline(probs: np.ndarray, onset_threshold: float = DEFAULT_ONSET_THRESHOLD,
                   frame_threshold: float = DEFAULT_FRAME_THRESHOLD) -> list[DecodedNote]:
    """All finished notes of a whole sequence of label-aligned probabilities (same rules as streaming)."""
    dec = NoteDecoder(onset_threshold, frame_threshold)
    events = dec.push(probs) + dec.close_all()
    return sorted((n for n in events if n.end_s is not None), key=lambda n: (n.onset_s, n.pitch))
