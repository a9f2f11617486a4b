"""Routing policy as pure functions: which edges may take a session, which mode, which edge.

No I/O and no clocks here; the registry feeds snapshots (:class:`Candidate`) in and the server turns the
:class:`Decision` into tickets. The policy:

* Only SERVING, fresh, uncordoned edges with free capacity are routable (:func:`routable`).
* Tempo decides mode and latency budget (:func:`plan`): above ``fast_bpm`` feedback must come within
  milliseconds, so the phone analyses on device unless an edge is within the tight ``fast_budget_ms``
  (then light mode there); below ``slow_bpm`` detailed mode on an edge with its model loaded within the
  looser ``slow_budget_ms`` (light within ``light_budget_ms`` when no such edge fits); in between light
  mode, detailed when the client prefers it and a model-ready edge fits.
* Among the edges that fit, nearest first: every edge within ``tier_slack_ms`` of the nearest is
  equally near; within that tier, power of two choices on utilisation, where utilisation counts
  sessions routed but not yet connected, so a burst spreads instead of piling onto one edge
  (:func:`choose`).
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .errors import NoCapacity

EARTH_RADIUS_KM = 6371.0
# Light in fibre covers about 200 km per ms one way; real paths are ~1.5x longer than great circles.
FIBRE_KM_PER_MS_RTT = 100.0
PATH_STRETCH = 1.5
BASE_RTT_MS = 2.0  # last-mile and stack overhead even for an edge next door


class Mode(enum.StrEnum):
    LIGHT = "light"
    DETAILED = "detailed"
    ON_DEVICE = "on_device"


class TempoClass(enum.StrEnum):
    FAST = "fast"
    MODERATE = "moderate"
    SLOW = "slow"


@dataclass(frozen=True, slots=True)
class Policy:
    """The numbers of the policy (from RoutingSettings)."""

    slow_bpm: float = 60.0
    fast_bpm: float = 120.0
    fast_budget_ms: float = 25.0
    light_budget_ms: float = 80.0
    slow_budget_ms: float = 150.0
    tier_slack_ms: float = 5.0
    max_alternates: int = 2


class Candidate(NamedTuple):
    """A routable edge as the policy sees it for one request (a tuple: routes build many of these)."""

    edge_id: str
    rtt_ms: float
    in_use: int          # sessions connected + routed-not-yet-connected
    capacity: int
    detailed_ready: bool  # detailed mode with its model loaded

    @property
    def utilisation(self) -> float:
        return self.in_use / self.capacity if self.capacity > 0 else math.inf


@dataclass(frozen=True, slots=True)
class Decision:
    mode: Mode
    chosen: Candidate | None  # None for ON_DEVICE
    alternates: tuple[Candidate, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    """What a tempo asks for: the preferred mode, whether it needs a model, and budgets."""

    tempo: TempoClass
    mode: Mode
    budget_ms: float
    fallback_mode: Mode | None
    fallback_budget_ms: float


def routable(serving: bool, fresh: bool, cordoned: bool, in_use: int, capacity: int) -> bool:
    """Only SERVING, fresh (reported within the TTL), uncordoned edges with a free slot take sessions."""
    return serving and fresh and not cordoned and in_use < capacity


def tempo_class(tempo_bpm: float, policy: Policy) -> TempoClass:
    """Unknown tempo (0) is treated as moderate."""
    if tempo_bpm > policy.fast_bpm:
        return TempoClass.FAST
    if 0 < tempo_bpm < policy.slow_bpm:
        return TempoClass.SLOW
    return TempoClass.MODERATE


def plan(tempo_bpm: float, prefer_detailed: bool, policy: Policy) -> Plan:
    tc = tempo_class(tempo_bpm, policy)
    if tc is TempoClass.FAST:
        return Plan(tc, Mode.LIGHT, policy.fast_budget_ms, Mode.ON_DEVICE, 0.0)
    if tc is TempoClass.SLOW:
        return Plan(tc, Mode.DETAILED, policy.slow_budget_ms, Mode.LIGHT, policy.light_budget_ms)
    if prefer_detailed:
        return Plan(tc, Mode.DETAILED, policy.light_budget_ms, Mode.LIGHT, policy.light_budget_ms)
    return Plan(tc, Mode.LIGHT, policy.light_budget_ms, None, 0.0)


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def estimate_rtt_ms(distance_km: float) -> float:
    """Round-trip time a client this far away can expect, when it measured none."""
    return BASE_RTT_MS + distance_km * PATH_STRETCH / FIBRE_KM_PER_MS_RTT


@dataclass(frozen=True, slots=True)
class CandidateSet:
    """Many candidates as columns (numpy arrays), so a route ranks a whole region without a Python loop."""

    edge_ids: np.ndarray        # object array of str
    rtt_ms: np.ndarray          # float
    in_use: np.ndarray          # int
    capacity: np.ndarray        # int
    detailed_ready: np.ndarray  # bool

    @classmethod
    def of(cls, candidates: Iterable[Candidate]) -> CandidateSet:
        cs = list(candidates)
        ids = np.empty(len(cs), dtype=object)
        ids[:] = [c.edge_id for c in cs]
        return cls(ids, np.array([c.rtt_ms for c in cs], dtype=float), np.array([c.in_use for c in cs], dtype=np.int64),
                   np.array([c.capacity for c in cs], dtype=np.int64),
                   np.array([c.detailed_ready for c in cs], dtype=bool))

    @classmethod
    def concat(cls, parts: Sequence[CandidateSet]) -> CandidateSet:
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return cls.of(())
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                     ("edge_ids", "rtt_ms", "in_use", "capacity", "detailed_ready")))

    def __len__(self) -> int:
        return len(self.rtt_ms)

    def __getitem__(self, i: int) -> Candidate:
        return Candidate(str(self.edge_ids[i]), float(self.rtt_ms[i]), int(self.in_use[i]), int(self.capacity[i]),
                         bool(self.detailed_ready[i]))

    def utilisation(self) -> np.ndarray:
        return self.in_use / np.maximum(self.capacity, 1)


def choose(cs: CandidateSet, idx: np.ndarray, policy: Policy, rng: random.Random) -> tuple[Candidate, tuple[Candidate, ...]]:
    """Among candidates ``idx`` of ``cs``: nearest tier first, then power of two choices on utilisation.

    Returns (chosen, alternates); alternates are the rest of the tier by utilisation, then farther
    edges by RTT.
    """
    if idx.size == 0:
        raise ValueError("choose() needs at least one candidate")
    rtt = cs.rtt_ms[idx]
    limit = float(rtt.min()) + policy.tier_slack_ms
    in_tier = rtt <= limit
    tier = idx[in_tier]
    util = cs.utilisation()
    if tier.size == 1:
        chosen = int(tier[0])
    else:
        a, b = (int(tier[j]) for j in rng.sample(range(tier.size), 2))
        chosen = a if (util[a], cs.rtt_ms[a]) <= (util[b], cs.rtt_ms[b]) else b
    k = policy.max_alternates
    if k <= 0:
        return cs[chosen], ()
    rest = tier[tier != chosen]
    picked = rest[np.lexsort((cs.rtt_ms[rest], util[rest]))[:k]].tolist()
    if len(picked) < k:
        farther = idx[~in_tier]
        picked += farther[np.lexsort((util[farther], cs.rtt_ms[farther]))[: k - len(picked)]].tolist()
    return cs[chosen], tuple(cs[i] for i in picked)


def decide(
    candidates: CandidateSet | Sequence[Candidate],
    tempo_bpm: float,
    prefer_detailed: bool,
    policy: Policy,
    rng: random.Random,
) -> Decision:
    """The whole policy for one request. ``candidates`` are routable edges with their RTT.

    Raises :class:`NoCapacity` when nothing fits (never for fast tempos: those fall back on device).
    """
    cs = candidates if isinstance(candidates, CandidateSet) else CandidateSet.of(candidates)
    p = plan(tempo_bpm, prefer_detailed, policy)
    within = cs.rtt_ms <= p.budget_ms
    if p.mode is Mode.DETAILED:
        fits = np.flatnonzero(within & cs.detailed_ready)
        if fits.size:
            chosen, alternates = choose(cs, fits, policy, rng)
            return Decision(Mode.DETAILED, chosen, alternates,
                            f"{p.tempo} tempo: detailed mode on a model-ready edge within {p.budget_ms:g} ms")
    else:
        fits = np.flatnonzero(within)
        if fits.size:
            chosen, alternates = choose(cs, fits, policy, rng)
            return Decision(Mode.LIGHT, chosen, alternates,
                            f"{p.tempo} tempo: light mode on an edge within {p.budget_ms:g} ms")
    if p.fallback_mode is Mode.ON_DEVICE:
        return Decision(Mode.ON_DEVICE, None, (),
                        f"{p.tempo} tempo: no edge within {p.budget_ms:g} ms, analyse on device")
    if p.fallback_mode is Mode.LIGHT:
        fits = np.flatnonzero(cs.rtt_ms <= p.fallback_budget_ms)
        if fits.size:
            chosen, alternates = choose(cs, fits, policy, rng)
            return Decision(Mode.LIGHT, chosen, alternates,
                            f"{p.tempo} tempo: no model-ready edge fits, light mode within "
                            f"{p.fallback_budget_ms:g} ms")
    if not len(cs):
        raise NoCapacity("no routable edge with free capacity")
    raise NoCapacity(f"no routable edge within the {p.tempo} tempo latency budget ({p.budget_ms:g} ms)")
