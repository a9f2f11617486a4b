"""The fleet as columns for routing: one array per field, edges grouped by region.

Routing reads this thousands of times a second, so it is laid out for the compiled policy
(:func:`control_plane.router.route_core`): positions (unit vectors), capacity, load (``in_use``:
sessions reported + routed-not-yet-connected), routability (``ok``: serving and accepting) and last
report time per edge, with each region a contiguous slice and its centroid. A route ranks the
regions by centroid and scans only the nearest ``regions_scanned`` that have routable edges, never
the whole fleet. Load changes are written in place (one slot per report or route); membership
changes rebuild the columns, which the :class:`~control_plane.registry.Registry` does lazily (at most
once per batch of registrations).

The registry owns one; each route worker holds a replica built from :meth:`FleetIndex.membership`
and refreshed from :meth:`FleetIndex.loads`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .router import (
    Candidate,
    CandidateSet,
    Decision,
    Plan,
    Policy,
    decide,
    decision,
    gather_core,
    plan,
    plan_args,
    route_core,
)


@dataclass(frozen=True, slots=True)
class Member:
    """What the index keeps of an edge's registration (loads are separate: they change)."""

    edge_id: str
    region: str
    vec: tuple[float, float, float]
    capacity: int
    detailed_ready: bool  # detailed mode with its model loaded


class FleetIndex:
    """Columns of the fleet, edges grouped by region (see the module docstring)."""

    def __init__(self, members: Sequence[Member] = ()) -> None:
        by_region: dict[str, list[Member]] = {}
        for m in members:
            by_region.setdefault(m.region, []).append(m)
        ordered = [m for group in by_region.values() for m in group]
        n = len(ordered)
        self.members: tuple[Member, ...] = tuple(ordered)
        self.slots = {m.edge_id: i for i, m in enumerate(ordered)}
        self.ids = np.empty(n, dtype=object)
        self.ids[:] = [m.edge_id for m in ordered]
        self.xyz = np.array([m.vec for m in ordered], dtype=float).reshape(n, 3)
        self.capacity = np.array([m.capacity for m in ordered], dtype=np.int64)
        self.detailed = np.array([m.detailed_ready for m in ordered], dtype=np.bool_)
        self.in_use = np.zeros(n, dtype=np.int64)
        self.ok = np.zeros(n, dtype=np.bool_)
        self.last_report = np.zeros(n)  # monotonic seconds: freshness is checked per route, not per sweep
        self.region_names = list(by_region)
        self.region_start = np.zeros(len(by_region), dtype=np.int64)
        self.region_end = np.zeros(len(by_region), dtype=np.int64)
        self.centroids = np.zeros((len(by_region), 3))
        start = 0
        for r, group in enumerate(by_region.values()):
            self.region_start[r], self.region_end[r] = start, start + len(group)
            total = self.xyz[start:start + len(group)].sum(axis=0)
            self.centroids[r] = total / (np.linalg.norm(total) or 1.0)
            start += len(group)
        self._centroid_of = {name: self.centroids[r] for r, name in enumerate(self.region_names)}
        # Scratch space for route_core (one route at a time per process).
        self._out = np.empty(16, dtype=np.int64)
        self._out_index = np.empty(n, dtype=np.int64)
        self._out_rtt = np.empty(n)

    def __len__(self) -> int:
        return len(self.members)

    # ------------------------------------------------------------------ state

    def set_load(self, slot: int, in_use: int, ok: bool, last_report: float) -> None:
        self.in_use[slot] = in_use
        self.ok[slot] = ok
        self.last_report[slot] = last_report

    def membership(self) -> list[tuple[str, str, tuple[float, float, float], int, bool]]:
        """The members in slot order, plain tuples (for a replica in another process)."""
        return [(m.edge_id, m.region, m.vec, m.capacity, m.detailed_ready) for m in self.members]

    def loads(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copies of the load columns (``in_use``, ``ok``, ``last_report``)."""
        return self.in_use.copy(), self.ok.copy(), self.last_report.copy()

    def set_loads(self, in_use: np.ndarray, ok: np.ndarray, last_report: np.ndarray) -> None:
        if len(in_use) != len(self.members):
            raise ValueError("loads for another membership")
        self.in_use, self.ok, self.last_report = in_use, ok, last_report

    def routable(self, slot: int, fresh_since: float) -> bool:
        return bool(self.ok[slot] and self.in_use[slot] < self.capacity[slot] and self.last_report[slot] >= fresh_since)

    def centroid(self, region: str) -> tuple[float, float, float] | None:
        c = self._centroid_of.get(region)
        if c is None:
            return None
        x, y, z = c.tolist()
        return (x, y, z)

    def candidate(self, slot: int, rtt_ms: float) -> Candidate:
        return Candidate(self.members[slot].edge_id, rtt_ms, int(self.in_use[slot]), int(self.capacity[slot]),
                         bool(self.detailed[slot]))

    # ------------------------------------------------------------------ routing

    def candidates(self, vec: tuple[float, float, float], regions_scanned: int, fresh_since: float) -> CandidateSet:
        """Routable edges of the ``regions_scanned`` nearest regions that have any, with estimated RTTs."""
        n = gather_core(np.asarray(vec, dtype=float), self.centroids, self.region_start, self.region_end, self.xyz,
                        self.ok, self.last_report, self.in_use, self.capacity, fresh_since, regions_scanned,
                        self._out_index, self._out_rtt)
        idx = self._out_index[:n].copy()
        return CandidateSet(self.ids[idx], self._out_rtt[:n].copy(), self.in_use[idx], self.capacity[idx],
                            self.detailed[idx])

    def decide(self, vec: tuple[float, float, float], p: Plan, policy: Policy, rng: random.Random,
               regions_scanned: int, fresh_since: float) -> Decision:
        """The policy over the nearest regions in one compiled call (no measured RTTs)."""
        if policy.max_alternates + 1 > len(self._out):
            self._out = np.empty(policy.max_alternates + 1, dtype=np.int64)
        status, m, n = route_core(
            np.asarray(vec, dtype=float), self.centroids, self.region_start, self.region_end, self.xyz, self.ok,
            self.last_report, self.in_use, self.capacity, self.detailed, fresh_since, regions_scanned,
            *plan_args(p), policy.tier_slack_ms, policy.max_alternates, rng.random(), rng.random(),
            self._out, self._out_index, self._out_rtt)
        picked = [self.candidate(int(self._out_index[k]), float(self._out_rtt[k])) for k in self._out[:m].tolist()]
        return decision(p, status, picked, n)


def warm_up() -> None:
    """Compiles the routing kernels (or loads them from numba's cache) now, with the types routes use."""
    index = FleetIndex([Member("warm-up", "r", (1.0, 0.0, 0.0), 1, True)])
    index.set_load(0, 0, True, 0.0)
    policy = Policy()
    rng = random.Random(0)
    for tempo in (45.0, 90.0):
        index.decide((1.0, 0.0, 0.0), plan(tempo, False, policy), policy, rng, 1, -1.0)
    decide(index.candidates((1.0, 0.0, 0.0), 1, -1.0), 90.0, False, policy, rng)
