"""Note decoding rules on hand-made probabilities: rising-edge onsets, re-strikes, frame-drop ends."""

from __future__ import annotations

import numpy as np

from edge_node.inference.decode import ONSET_BIAS_S, NoteDecoder, decode_offline
from edge_node.inference.features import HOP_S
from edge_node.inference.model import HEAD_FRAME, HEAD_ONSET, HEAD_VELOCITY, LOWEST_KEY_MIDI, N_HEADS, N_KEYS


def probs(n: int) -> np.ndarray:
    return np.zeros((n, N_HEADS, N_KEYS), np.float32)


def test_onset_then_frame_drop_makes_one_note_with_velocity() -> None:
    p = probs(20)
    k = 39  # C4
    p[3, HEAD_ONSET, k] = 0.9
    p[4, HEAD_ONSET, k] = 0.7  # still above threshold: no second note
    p[3:10, HEAD_FRAME, k] = 0.8
    p[3, HEAD_VELOCITY, k] = 80 / 127
    notes = decode_offline(p)
    assert len(notes) == 1
    n = notes[0]
    assert n.pitch == LOWEST_KEY_MIDI + k and n.velocity == 80
    assert abs(n.onset_s - (3 * HOP_S + ONSET_BIAS_S)) < 1e-9
    assert abs((n.end_s or 0) - 10 * HOP_S) < 1e-9


def test_restrike_ends_the_previous_note_of_that_key() -> None:
    p = probs(30)
    k = 50
    p[2, HEAD_ONSET, k] = 0.9
    p[12, HEAD_ONSET, k] = 0.9
    p[2:25, HEAD_FRAME, k] = 0.9
    notes = decode_offline(p)
    assert [round(n.onset_s / HOP_S - 0.5) for n in notes] == [2, 12]
    assert notes[0].end_s == notes[1].onset_s


def test_streaming_decoder_announces_start_before_end_and_closes_at_stream_end() -> None:
    p = probs(10)
    p[1, HEAD_ONSET, 10] = 0.95
    p[1:, HEAD_FRAME, 10] = 0.95
    dec = NoteDecoder()
    first = dec.push(p[:3])
    assert len(first) == 1 and first[0].end_s is None
    assert dec.push(p[3:]) == []
    closed = dec.close_all()
    assert len(closed) == 1 and closed[0].note_id == first[0].note_id
    assert abs((closed[0].end_s or 0) - 10 * HOP_S) < 1e-9


def test_below_threshold_activity_is_not_a_note() -> None:
    p = probs(10)
    p[:, HEAD_ONSET, :] = 0.3
    p[:, HEAD_FRAME, :] = 0.9
    assert decode_offline(p, onset_threshold=0.5) == []
