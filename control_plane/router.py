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

The policy's loops are compiled (numba, ``cache=True``: :func:`decide_core`, :func:`choose_core`,
:func:`gather_core`, :func:`route_core`): a route runs thousands of times a second and numpy's
per-call overhead on arrays of a few dozen edges cost more than the policy itself. :func:`decide` and
:func:`choose` are the same kernels behind a Python interface, so the tests here test what routes.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numba import njit

import edge_node.dsp  # noqa: F401 - points numba's cache somewhere writable before anything compiles

from .errors import NoCapacity

EARTH_RADIUS_KM = 6371.0
# Light in fibre covers about 200 km per ms one way; real paths are ~1.5x longer than great circles.
FIBRE_KM_PER_MS_RTT = 100.0
PATH_STRETCH = 1.5
BASE_RTT_MS = 2.0  # last-mile and stack overhead even for an edge next door
RTT_MS_PER_RADIAN = 2 * EARTH_RADIUS_KM * PATH_STRETCH / FIBRE_KM_PER_MS_RTT  # times asin(chord / 2)

# What the compiled policy found (decide_core's status).
FOUND_PRIMARY, FOUND_FALLBACK, FOUND_ON_DEVICE, FOUND_NOTHING = 0, 1, 2, 3
# Plan fallbacks as the kernels see them.
FALLBACK_NONE, FALLBACK_ON_DEVICE, FALLBACK_LIGHT = 0, 1, 2


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


@njit(cache=True, nogil=True)
def _better_load(util: np.ndarray, rtt: np.ndarray, a: int, b: int) -> bool:
    """``(util[a], rtt[a]) < (util[b], rtt[b])``."""
    return util[a] < util[b] or (util[a] == util[b] and rtt[a] < rtt[b])


@njit(cache=True, nogil=True)
def _nearer(util: np.ndarray, rtt: np.ndarray, a: int, b: int) -> bool:
    """``(rtt[a], util[a]) < (rtt[b], util[b])``."""
    return rtt[a] < rtt[b] or (rtt[a] == rtt[b] and util[a] < util[b])


@njit(cache=True, nogil=True)
def choose_core(rtt: np.ndarray, util: np.ndarray, fits: np.ndarray, n: int, slack_ms: float, max_alternates: int,
                u1: float, u2: float, out: np.ndarray) -> int:
    """Among positions ``fits[:n]``: nearest tier, power of two choices (``u1``, ``u2``: uniform draws in
    [0, 1)), then alternates. Writes the chosen position then the alternates' to ``out``; returns how many.

    Alternates: the rest of the tier by (utilisation, RTT), then farther fits by (RTT, utilisation); ties
    keep the order of ``fits`` (a stable sort).
    """
    nearest = np.inf
    for k in range(n):
        nearest = min(nearest, rtt[fits[k]])
    limit = nearest + slack_ms
    tier = np.empty(n, np.int64)
    nt = 0
    for k in range(n):
        if rtt[fits[k]] <= limit:
            tier[nt] = fits[k]
            nt += 1
    if nt == 1:
        chosen = tier[0]
    else:
        i = min(int(u1 * nt), nt - 1)
        j = min(int(u2 * (nt - 1)), nt - 2)
        if j >= i:
            j += 1
        a, b = tier[i], tier[j]
        chosen = b if _better_load(util, rtt, b, a) else a  # a on a tie: (util, rtt)[a] <= [b]
    out[0] = chosen
    m = 1
    if max_alternates <= 0:
        return m
    used = np.zeros(rtt.shape[0], np.bool_)
    used[chosen] = True
    while m < 1 + max_alternates:
        best = -1
        for t in range(nt):
            f = tier[t]
            if not used[f] and (best < 0 or _better_load(util, rtt, f, best)):
                best = f
        if best < 0:
            break
        used[best] = True
        out[m] = best
        m += 1
    while m < 1 + max_alternates:
        best = -1
        for k in range(n):
            f = fits[k]
            if not used[f] and rtt[f] > limit and (best < 0 or _nearer(util, rtt, f, best)):
                best = f
        if best < 0:
            break
        used[best] = True
        out[m] = best
        m += 1
    return m


@njit(cache=True, nogil=True)
def decide_core(rtt: np.ndarray, util: np.ndarray, detailed: np.ndarray, want_detailed: bool, budget_ms: float,
                fallback: int, fallback_budget_ms: float, slack_ms: float, max_alternates: int, u1: float, u2: float,
                out: np.ndarray) -> tuple[int, int]:
    """The policy over candidates (columns): returns (``FOUND_*`` status, how many positions in ``out``)."""
    n = rtt.shape[0]
    fits = np.empty(n, np.int64)
    nf = 0
    for k in range(n):
        if rtt[k] <= budget_ms and (detailed[k] or not want_detailed):
            fits[nf] = k
            nf += 1
    if nf:
        return FOUND_PRIMARY, choose_core(rtt, util, fits, nf, slack_ms, max_alternates, u1, u2, out)
    if fallback == FALLBACK_ON_DEVICE:
        return FOUND_ON_DEVICE, 0
    if fallback == FALLBACK_LIGHT:
        for k in range(n):
            if rtt[k] <= fallback_budget_ms:
                fits[nf] = k
                nf += 1
        if nf:
            return FOUND_FALLBACK, choose_core(rtt, util, fits, nf, slack_ms, max_alternates, u1, u2, out)
    return FOUND_NOTHING, 0


@njit(cache=True, nogil=True)
def gather_core(c: np.ndarray, centroids: np.ndarray, region_start: np.ndarray, region_end: np.ndarray,
                xyz: np.ndarray, ok: np.ndarray, last_report: np.ndarray, in_use: np.ndarray, capacity: np.ndarray,
                fresh_since: float, regions_scanned: int, out_index: np.ndarray, out_rtt: np.ndarray) -> int:
    """Routable edges of the ``regions_scanned`` nearest regions (by centroid) that have any, with their
    estimated RTT from ``c`` (a unit vector). Edges are grouped by region (``region_start/end`` slices).
    Writes fleet indices and RTTs; returns how many. Routable: ``ok`` (serving, accepting), a free slot
    (``in_use < capacity``) and a report at or after ``fresh_since`` (monotonic seconds)."""
    r_count = centroids.shape[0]
    dist = np.empty(r_count)
    for r in range(r_count):
        dx, dy, dz = centroids[r, 0] - c[0], centroids[r, 1] - c[1], centroids[r, 2] - c[2]
        dist[r] = dx * dx + dy * dy + dz * dz
    order = np.argsort(dist, kind="mergesort")
    n = 0
    found = 0
    for o in range(r_count):
        r = order[o]
        before = n
        for g in range(region_start[r], region_end[r]):
            if ok[g] and in_use[g] < capacity[g] and last_report[g] >= fresh_since:
                dx, dy, dz = xyz[g, 0] - c[0], xyz[g, 1] - c[1], xyz[g, 2] - c[2]
                chord = np.sqrt(dx * dx + dy * dy + dz * dz)
                out_index[n] = g
                out_rtt[n] = BASE_RTT_MS + RTT_MS_PER_RADIAN * np.arcsin(min(1.0, chord / 2))
                n += 1
        if n > before:
            found += 1
            if found >= regions_scanned:
                break
    return n


@njit(cache=True, nogil=True)
def route_core(c: np.ndarray, centroids: np.ndarray, region_start: np.ndarray, region_end: np.ndarray,
               xyz: np.ndarray, ok: np.ndarray, last_report: np.ndarray, in_use: np.ndarray, capacity: np.ndarray,
               detailed: np.ndarray, fresh_since: float, regions_scanned: int, want_detailed: bool, budget_ms: float,
               fallback: int, fallback_budget_ms: float, slack_ms: float, max_alternates: int, u1: float, u2: float,
               out: np.ndarray, out_index: np.ndarray, out_rtt: np.ndarray) -> tuple[int, int, int]:
    """:func:`gather_core` then :func:`decide_core` in one call: (status, positions in ``out``, candidates).
    ``out[k]`` are positions into ``out_index`` (fleet indices) and ``out_rtt``."""
    n = gather_core(c, centroids, region_start, region_end, xyz, ok, last_report, in_use, capacity, fresh_since,
                    regions_scanned, out_index, out_rtt)
    util = np.empty(n)
    det = np.empty(n, np.bool_)
    for k in range(n):
        g = out_index[k]
        util[k] = in_use[g] / max(capacity[g], 1)
        det[k] = detailed[g]
    status, m = decide_core(out_rtt[:n], util, det, want_detailed, budget_ms, fallback, fallback_budget_ms, slack_ms,
                            max_alternates, u1, u2, out)
    return status, m, n


def choose(cs: CandidateSet, idx: np.ndarray, policy: Policy, rng: random.Random) -> tuple[Candidate, tuple[Candidate, ...]]:
    """Among candidates ``idx`` of ``cs``: nearest tier first, then power of two choices on utilisation.

    Returns (chosen, alternates); alternates are the rest of the tier by utilisation, then farther
    edges by RTT.
    """
    if idx.size == 0:
        raise ValueError("choose() needs at least one candidate")
    out = np.empty(1 + max(policy.max_alternates, 0), np.int64)
    m = choose_core(cs.rtt_ms.astype(float), cs.utilisation(), idx.astype(np.int64), idx.size, policy.tier_slack_ms,
                    policy.max_alternates, rng.random(), rng.random(), out)
    return cs[int(out[0])], tuple(cs[int(i)] for i in out[1:m])


def plan_args(p: Plan) -> tuple[bool, float, int, float]:
    """A plan as the kernels take it: (want_detailed, budget_ms, fallback, fallback_budget_ms)."""
    fallback = (FALLBACK_ON_DEVICE if p.fallback_mode is Mode.ON_DEVICE
                else FALLBACK_LIGHT if p.fallback_mode is Mode.LIGHT else FALLBACK_NONE)
    return p.mode is Mode.DETAILED, p.budget_ms, fallback, p.fallback_budget_ms


def decision(p: Plan, status: int, picked: Sequence[Candidate], n_candidates: int) -> Decision:
    """The :class:`Decision` for a kernel's result (``picked``: chosen then alternates).

    Raises :class:`NoCapacity` when nothing fits (never for fast tempos: those fall back on device).
    """
    if status == FOUND_PRIMARY:
        if p.mode is Mode.DETAILED:
            return Decision(Mode.DETAILED, picked[0], tuple(picked[1:]),
                            f"{p.tempo} tempo: detailed mode on a model-ready edge within {p.budget_ms:g} ms")
        return Decision(Mode.LIGHT, picked[0], tuple(picked[1:]),
                        f"{p.tempo} tempo: light mode on an edge within {p.budget_ms:g} ms")
    if status == FOUND_ON_DEVICE:
        return Decision(Mode.ON_DEVICE, None, (),
                        f"{p.tempo} tempo: no edge within {p.budget_ms:g} ms, analyse on device")
    if status == FOUND_FALLBACK:
        return Decision(Mode.LIGHT, picked[0], tuple(picked[1:]),
                        f"{p.tempo} tempo: no model-ready edge fits, light mode within "
                        f"{p.fallback_budget_ms:g} ms")
    if not n_candidates:
        raise NoCapacity("no routable edge with free capacity")
    raise NoCapacity(f"no routable edge within the {p.tempo} tempo latency budget ({p.budget_ms:g} ms)")


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
    out = np.empty(1 + max(policy.max_alternates, 0), np.int64)
    status, m = decide_core(cs.rtt_ms.astype(float), cs.utilisation(), cs.detailed_ready.astype(np.bool_),
                            *plan_args(p), policy.tier_slack_ms, policy.max_alternates, rng.random(), rng.random(), out)
    return decision(p, status, [cs[int(i)] for i in out[:m]], len(cs))
