"""The pipeline is causal: cutting the audio at c changes no event decided before c.

For every cut point c, the events whose decision time is before ``c - lookahead_s`` are identical
(same fields, same ``seq``) whether the pipeline saw the whole file or the file truncated at c. The
decision time of an event is its ``t``, except for a note's closing event (same ``note_id``, ``end``
set), which is decided at ``end``.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge_node.events import Event
from edge_node.material import metrics, sets
from edge_node.pipeline import StreamingPipeline

CUTS_S = (1.03, 2.5, 4.011, 6.7, 9.99)


def decided_at(e: Event) -> float:
    if e["type"] == "note" and e.get("end") is not None:
        return float(e["end"])
    return float(e["t"])


@pytest.mark.parametrize("cut_s", CUTS_S)
def test_truncated_stream_agrees_with_whole_stream(heldout_onsets: list[sets.Item], cut_s: float) -> None:
    item = heldout_onsets[1]
    whole = metrics.run_pipeline(item.audio)
    cut = metrics.run_pipeline(item.audio, max_samples=int(cut_s * 48_000))
    bound = StreamingPipeline.lookahead_s
    early_whole = [e for e in whole.events if decided_at(e) < cut_s - bound]
    early_cut = [e for e in cut.events if decided_at(e) < cut_s - bound]
    assert early_whole, "the cut must leave something to compare"
    assert early_cut == early_whole


def test_lookahead_bound_covers_every_event_emission(heldout_onsets: list[sets.Item]) -> None:
    run = metrics.run_pipeline(heldout_onsets[2].audio)
    lags = np.array([at - decided_at(e) for e, at in zip(run.events, run.emitted_at, strict=True)])
    assert lags.max() <= StreamingPipeline.lookahead_s + 0.020  # + one chunk of emission granularity
