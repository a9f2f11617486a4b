"""The routing policy alone: pure functions over candidate snapshots, no servers."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from control_plane.errors import NoCapacity
from control_plane.router import (
    Candidate,
    CandidateSet,
    Mode,
    Policy,
    TempoClass,
    choose,
    decide,
    estimate_rtt_ms,
    great_circle_km,
    plan,
    routable,
    tempo_class,
)

POLICY = Policy(slow_bpm=60, fast_bpm=120, fast_budget_ms=25, light_budget_ms=80, slow_budget_ms=150,
                tier_slack_ms=10, max_alternates=2)


def cand(edge_id: str, rtt: float, in_use: int = 0, capacity: int = 10, detailed: bool = False) -> Candidate:
    return Candidate(edge_id, rtt, in_use, capacity, detailed)


@pytest.mark.parametrize(("serving", "fresh", "cordoned", "in_use", "capacity", "expected"), [
    (True, True, False, 3, 10, True),
    (False, True, False, 3, 10, False),   # draining/stale/disconnected
    (True, False, False, 3, 10, False),   # no report within the TTL
    (True, True, True, 3, 10, False),     # cordoned
    (True, True, False, 10, 10, False),   # full (counting pending)
])
def test_only_serving_fresh_uncordoned_edges_with_a_free_slot_are_routable(
    serving: bool, fresh: bool, cordoned: bool, in_use: int, capacity: int, expected: bool
) -> None:
    assert routable(serving, fresh, cordoned, in_use, capacity) is expected


def test_tempo_thresholds_are_exclusive_and_zero_means_unknown() -> None:
    assert tempo_class(121, POLICY) is TempoClass.FAST
    assert tempo_class(120, POLICY) is TempoClass.MODERATE
    assert tempo_class(60, POLICY) is TempoClass.MODERATE
    assert tempo_class(59.9, POLICY) is TempoClass.SLOW
    assert tempo_class(0, POLICY) is TempoClass.MODERATE
    assert plan(40, False, POLICY).budget_ms == 150 and plan(40, False, POLICY).mode is Mode.DETAILED
    assert plan(140, False, POLICY).fallback_mode is Mode.ON_DEVICE


def test_fast_tempo_goes_on_device_unless_an_edge_is_within_the_tight_budget() -> None:
    rng = random.Random(1)
    far = [cand("far", 40.0)]
    d = decide(far, 150, False, POLICY, rng)
    assert d.mode is Mode.ON_DEVICE and d.chosen is None
    near = [cand("far", 40.0), cand("near", 12.0)]
    d = decide(near, 150, False, POLICY, rng)
    assert d.mode is Mode.LIGHT and d.chosen is not None and d.chosen.edge_id == "near"
    assert decide([], 150, False, POLICY, rng).mode is Mode.ON_DEVICE  # never exhausted when fast


def test_slow_tempo_prefers_a_model_ready_edge_with_the_looser_budget() -> None:
    rng = random.Random(2)
    cands = [cand("light-near", 5.0), cand("detailed-far", 120.0, detailed=True)]
    d = decide(cands, 45, False, POLICY, rng)
    assert d.mode is Mode.DETAILED and d.chosen is not None and d.chosen.edge_id == "detailed-far"
    # Beyond the slow budget, fall back to light mode within the light budget.
    cands = [cand("light-near", 5.0), cand("detailed-too-far", 200.0, detailed=True)]
    d = decide(cands, 45, False, POLICY, rng)
    assert d.mode is Mode.LIGHT and d.chosen is not None and d.chosen.edge_id == "light-near"


def test_moderate_tempo_is_light_with_detailed_on_request() -> None:
    rng = random.Random(3)
    cands = [cand("a", 10.0), cand("b", 11.0, detailed=True)]
    assert decide(cands, 90, False, POLICY, rng).mode is Mode.LIGHT
    d = decide(cands, 90, True, POLICY, rng)
    assert d.mode is Mode.DETAILED and d.chosen is not None and d.chosen.edge_id == "b"


def test_nothing_within_budget_is_resource_exhausted() -> None:
    rng = random.Random(4)
    with pytest.raises(NoCapacity):
        decide([], 90, False, POLICY, rng)
    with pytest.raises(NoCapacity):
        decide([cand("too-far", 95.0)], 90, False, POLICY, rng)


def test_nearest_tier_wins_over_load_and_alternates_follow() -> None:
    rng = random.Random(5)
    cands = CandidateSet.of([cand("near-busy", 5.0, in_use=9), cand("near-idle", 8.0, in_use=0),
                             cand("far-idle", 60.0)])
    counts: Counter[str] = Counter()
    for _ in range(200):
        chosen, alternates = choose(cands, np.arange(3), POLICY, rng)
        counts[chosen.edge_id] += 1
        assert chosen.edge_id != "far-idle"
        assert len(alternates) == 2 and alternates[-1].edge_id == "far-idle"
    # Two choices among two near edges always pick the less utilised one.
    assert counts == {"near-idle": 200}


def test_power_of_two_choices_with_pending_counts_keeps_a_burst_balanced() -> None:
    rng = random.Random(6)
    in_use = {f"e{i}": 0 for i in range(40)}
    for _ in range(2000):
        cands = CandidateSet.of(cand(e, 5.0 + i * 0.1, in_use=n, capacity=1000)
                                for i, (e, n) in enumerate(in_use.items()))
        chosen, _ = choose(cands, np.arange(len(cands)), POLICY, rng)
        in_use[chosen.edge_id] += 1  # counted as pending at once
    mean = 2000 / 40
    assert max(in_use.values()) < 1.5 * mean, in_use


def test_rtt_estimate_grows_with_great_circle_distance() -> None:
    paris_london = great_circle_km(48.8566, 2.3522, 51.5074, -0.1278)
    assert 330 < paris_london < 360
    assert great_circle_km(0, 0, 0, 180) == pytest.approx(20015, rel=1e-3)
    assert estimate_rtt_ms(0) == pytest.approx(2.0)
    assert 6 < estimate_rtt_ms(paris_london) < 9
