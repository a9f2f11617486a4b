"""The fleet index alone: its compiled route (gather + policy in one call) against the policy's reference
path (candidates as columns, then :func:`decide`) and against a plain great-circle computation."""

from __future__ import annotations

import random

import pytest

from control_plane.errors import NoCapacity
from control_plane.fleet_index import FleetIndex, Member
from control_plane.registry import unit_vector
from control_plane.router import Policy, decide, estimate_rtt_ms, great_circle_km, plan

POLICY = Policy(slow_bpm=60, fast_bpm=120, fast_budget_ms=25, light_budget_ms=80, slow_budget_ms=150,
                tier_slack_ms=5, max_alternates=2)
NOW = 1000.0
TTL_S = 5.0


def random_fleet(seed: int, regions: int = 12, edges: int = 300) -> tuple[FleetIndex, dict[str, tuple[float, float]]]:
    rng = random.Random(seed)
    centres = [(rng.uniform(-60, 60), rng.uniform(-170, 170)) for _ in range(regions)]
    where: dict[str, tuple[float, float]] = {}
    members = []
    for i in range(edges):
        r = rng.randrange(regions)
        lat, lon = centres[r][0] + rng.uniform(-3, 3), centres[r][1] + rng.uniform(-3, 3)
        where[f"e{i}"] = (lat, lon)
        members.append(Member(f"e{i}", f"r{r}", unit_vector(lat, lon), rng.choice((1, 4, 50)), rng.random() < 0.5))
    index = FleetIndex(members)
    for slot, m in enumerate(index.members):
        # some not serving, some stale, some full, the rest with random load
        index.set_load(slot, rng.randint(0, m.capacity), rng.random() > 0.1,
                       NOW - (TTL_S + 1 if rng.random() < 0.1 else rng.uniform(0, TTL_S)))
    return index, where


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_compiled_route_decides_as_the_reference_policy_over_the_same_candidates(seed: int) -> None:
    index, _ = random_fleet(seed)
    rng = random.Random(seed)
    outcomes = set()
    for _ in range(400):
        vec = unit_vector(rng.uniform(-70, 70), rng.uniform(-180, 180))
        tempo, detailed = rng.choice((0.0, 45.0, 90.0, 150.0)), rng.random() < 0.3
        scanned = rng.choice((1, 2, 3))
        draws = rng.random()
        p = plan(tempo, detailed, POLICY)
        try:
            fast = index.decide(vec, p, POLICY, random.Random(draws), scanned, NOW - TTL_S)
        except NoCapacity as exc:
            with pytest.raises(NoCapacity) as ref_exc:
                decide(index.candidates(vec, scanned, NOW - TTL_S), tempo, detailed, POLICY, random.Random(draws))
            assert str(ref_exc.value) == str(exc)
            outcomes.add("exhausted")
            continue
        ref = decide(index.candidates(vec, scanned, NOW - TTL_S), tempo, detailed, POLICY, random.Random(draws))
        assert fast == ref
        outcomes.add(fast.mode.value)
    assert outcomes >= {"light", "detailed", "on_device"}  # the fleets exercise every branch


def test_candidates_are_the_routable_edges_of_the_nearest_regions_with_great_circle_rtts() -> None:
    index, where = random_fleet(7)
    client = (20.0, 10.0)
    vec = unit_vector(*client)
    cs = index.candidates(vec, 2, NOW - TTL_S)
    assert len(cs) > 0
    regions = {index.members[index.slots[str(e)]].region for e in cs.edge_ids}
    assert len(regions) == 2
    routable = {m.edge_id for slot, m in enumerate(index.members) if index.routable(slot, NOW - TTL_S)}
    in_regions = {m.edge_id for m in index.members if m.region in regions}
    assert set(cs.edge_ids.tolist()) == routable & in_regions
    for edge_id, rtt in zip(cs.edge_ids.tolist(), cs.rtt_ms.tolist(), strict=True):
        assert rtt == pytest.approx(estimate_rtt_ms(great_circle_km(*client, *where[edge_id])), rel=1e-9)
    # The two regions are the nearest by centroid among those with a routable edge.
    centroid_dist = {name: sum((a - b) ** 2 for a, b in zip(index.centroid(name) or (), vec, strict=True))
                     for name in index.region_names
                     if any(m.region == name and m.edge_id in routable for m in index.members)}
    assert regions == set(sorted(centroid_dist, key=centroid_dist.__getitem__)[:2])


def test_never_a_full_stale_or_unserving_edge() -> None:
    index, _ = random_fleet(11)
    rng = random.Random(11)
    for _ in range(300):
        vec = unit_vector(rng.uniform(-70, 70), rng.uniform(-180, 180))
        try:
            d = index.decide(vec, plan(90.0, False, POLICY), POLICY, rng, 2, NOW - TTL_S)
        except NoCapacity:
            continue
        for c in (d.chosen, *d.alternates):
            assert c is not None
            assert index.routable(index.slots[c.edge_id], NOW - TTL_S)
