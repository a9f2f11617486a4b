"""Rendered evaluation material for the analysis-core tests (held-out sets: never tuned on)."""

from __future__ import annotations

import pytest

from edge_node.material import sets

# Sizes of the held-out subsets the tests score; bench/bench_core.py scores the full sets.
N_ONSET = 24
N_PITCH = 12
N_TEMPO = 24
N_DYNAMICS = 10


@pytest.fixture(scope="session")
def heldout_onsets() -> list[sets.Item]:
    return list(sets.collection("onsets", "heldout", N_ONSET))


@pytest.fixture(scope="session")
def heldout_pitch() -> list[sets.Item]:
    return list(sets.collection("pitch", "heldout", N_PITCH))


@pytest.fixture(scope="session")
def heldout_tempo() -> list[sets.Item]:
    return list(sets.collection("tempo", "heldout", N_TEMPO))


@pytest.fixture(scope="session")
def heldout_dynamics() -> list[sets.Item]:
    return list(sets.collection("dynamics", "heldout", N_DYNAMICS))
