"""Turns a route request into a routing decision plus signed session tickets.

Shared by the gRPC ``Route`` RPC and the JSON gateway. Validation and bookkeeping live here; the
policy itself is :func:`control_plane.router.decide` (pure). Synchronous on purpose: a route touches
only memory (the registry) and buffers its audit row in the store, so it never waits.
"""

from __future__ import annotations

import base64
import math
import random
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _json_str  # type: ignore[attr-defined]
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_node.tickets import PREFIX as TICKET_PREFIX

from .errors import InvalidRequest, NoCapacity
from .registry import unit_vector, validate_location
from .router import Candidate, CandidateSet, Decision, Mode, Plan, Policy, decide, plan
from .settings import RoutingSettings

MAX_USER_CHARS = 256
MAX_PIECE_CHARS = 256
MAX_RTTS = 64
MAX_RTT_MS = 10_000.0
MAX_TEMPO_BPM = 400.0
ID_BYTES = 12  # session and ticket ids: 96 random bits, 16 URL-safe characters


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def mint_route_ticket(private_key: Ed25519PrivateKey, session_id: str, user: str, edge_id: str, iat: float,
                      exp: float, piece: str | None, mode: str | None, ticket_id: str) -> str:
    """A ticket in :func:`edge_node.tickets.mint_ticket`'s wire format (the edge verifies it with
    ``verify_ticket``), minted without building and re-validating :class:`~edge_node.tickets.TicketClaims`:
    a route has validated every field already (user and piece lengths, a registered edge id, a known mode,
    ``exp > iat``), and this runs thousands of times a second. Same JSON as ``json.dumps`` with
    ``separators=(",", ":")`` and ``ensure_ascii=True``."""
    claims = (f'{{"sid":{_json_str(session_id)},"sub":{_json_str(user)},"edge":{_json_str(edge_id)},'
              f'"iat":{iat!r},"exp":{exp!r},"jti":{_json_str(ticket_id)}')
    if piece is not None:
        claims += f',"piece":{_json_str(piece)}'
    if mode is not None:
        claims += f',"mode":{_json_str(mode)}'
    signed = f"{TICKET_PREFIX}.{_b64((claims + '}').encode('ascii'))}"
    return f"{signed}.{_b64(private_key.sign(signed.encode('ascii')))}"


@dataclass(slots=True)
class RouteQuery:
    user: str
    lat: float | None = None
    lon: float | None = None
    region: str = ""
    rtts: Mapping[str, float] = field(default_factory=dict)
    piece: str = ""
    tempo_bpm: float = 0.0
    prefer_detailed: bool = False
    alternate_tickets: bool = False


@dataclass(frozen=True, slots=True)
class RoutedEdge:
    edge_id: str
    whip_url: str
    ticket: str | None  # None for an alternate when the request did not ask for alternate tickets
    rtt_ms: float
    region: str


@dataclass(frozen=True, slots=True)
class RouteResult:
    session_id: str
    mode: Mode
    reason: str
    edge: RoutedEdge | None          # None for on-device
    expires_at: float
    alternates: tuple[RoutedEdge, ...]


@dataclass(slots=True)
class RouteCounters:
    total: int = 0
    exhausted: int = 0
    on_device: int = 0


def validate_query(q: RouteQuery) -> None:
    """Raises :class:`InvalidRequest` naming the first bad field."""
    if not q.user or len(q.user) > MAX_USER_CHARS:
        raise InvalidRequest("user", f"must be 1..{MAX_USER_CHARS} characters")
    if len(q.piece) > MAX_PIECE_CHARS:
        raise InvalidRequest("piece", f"longer than {MAX_PIECE_CHARS} characters")
    if not (math.isfinite(q.tempo_bpm) and 0.0 <= q.tempo_bpm <= MAX_TEMPO_BPM):
        raise InvalidRequest("tempo_bpm", f"must be 0 (unknown) .. {MAX_TEMPO_BPM:g}")
    if (q.lat is None) != (q.lon is None):
        raise InvalidRequest("lat", "lat and lon go together")
    if q.lat is not None and q.lon is not None:
        validate_location(q.lat, q.lon)
    if len(q.region) > 64:
        raise InvalidRequest("region", "longer than 64 characters")
    if len(q.rtts) > MAX_RTTS:
        raise InvalidRequest("rtts", f"at most {MAX_RTTS} measurements")
    for edge_id, rtt in q.rtts.items():
        if not (math.isfinite(rtt) and 0.0 <= rtt <= MAX_RTT_MS):
            raise InvalidRequest("rtts", f"rtt for {edge_id!r} must be 0..{MAX_RTT_MS:g} ms")
    if q.lat is None and not q.region and not q.rtts:
        raise InvalidRequest("location", "give lat/lon, a region or measured RTTs")


class RoutedEdgeInfo(Protocol):
    whip_url: str
    region: str
    vec: tuple[float, float, float]


class RouteSource(Protocol):
    """What routing reads: the :class:`Registry`, or a route worker's replica of it."""

    @property
    def edges(self) -> Mapping[str, RoutedEdgeInfo]: ...

    def region_centroid(self, region: str) -> tuple[float, float, float] | None: ...

    def candidates(self, vec: tuple[float, float, float], rtts: Mapping[str, float],
                   regions_scanned: int) -> CandidateSet: ...

    def decide_near(self, vec: tuple[float, float, float], p: Plan, policy: Policy, rng: random.Random,
                    regions_scanned: int) -> Decision: ...

    def note_routed(self, edge_id: str, session_id: str) -> None: ...


class RouteLog(Protocol):
    """Where routing writes: the :class:`Store`, or a route worker's batch to the main process."""

    def session_changed(self, session_id: str, **fields: Any) -> None: ...

    def route_recorded(self, row: dict[str, Any]) -> None: ...


class Dispatcher:
    """Routes sessions: candidates from the registry → policy → tickets → bookkeeping."""

    def __init__(self, registry: RouteSource, store: RouteLog, settings: RoutingSettings,
                 private_key: Ed25519PrivateKey, rng: random.Random | None = None) -> None:
        self.registry = registry
        self.store = store
        self.settings = settings
        self.private_key = private_key
        self.policy = Policy(
            slow_bpm=settings.slow_bpm, fast_bpm=settings.fast_bpm, fast_budget_ms=settings.fast_budget_ms,
            light_budget_ms=settings.light_budget_ms, slow_budget_ms=settings.slow_budget_ms,
            tier_slack_ms=settings.tier_slack_ms, max_alternates=settings.max_alternates,
        )
        self.rng = rng or random.Random()
        self.counters = RouteCounters()

    def _client_vector(self, q: RouteQuery) -> tuple[float, float, float]:
        if q.lat is not None and q.lon is not None:
            return unit_vector(q.lat, q.lon)
        if q.region:
            centroid = self.registry.region_centroid(q.region)
            if centroid is None:
                raise InvalidRequest("region", f"no edge is known in region {q.region!r}")
            return centroid
        # Only RTTs: centre on the lowest-RTT known edge.
        known = [(rtt, e) for e_id, rtt in q.rtts.items() if (e := self.registry.edges.get(e_id)) is not None]
        if not known:
            raise InvalidRequest("rtts", "none of the measured edges is known")
        return min(known, key=lambda p: p[0])[1].vec

    def route(self, q: RouteQuery) -> RouteResult:
        validate_query(q)
        self.counters.total += 1
        vec = self._client_vector(q)
        try:
            if q.rtts:  # measured RTTs replace estimates, and measured edges count wherever they are
                candidates = self.registry.candidates(vec, q.rtts, self.settings.regions_scanned)
                decision = decide(candidates, q.tempo_bpm, q.prefer_detailed, self.policy, self.rng)
            else:
                decision = self.registry.decide_near(vec, plan(q.tempo_bpm, q.prefer_detailed, self.policy),
                                                     self.policy, self.rng, self.settings.regions_scanned)
        except NoCapacity:
            self.counters.exhausted += 1
            raise
        now = time.time()
        session_id = secrets.token_urlsafe(ID_BYTES)
        expires_at = now + self.settings.ticket_ttl_s
        if decision.chosen is None:
            self.counters.on_device += 1
            self.store.route_recorded({"at": now, "user": q.user, "session_id": session_id, "edge_id": "",
                                       "mode": decision.mode.value, "tempo_bpm": q.tempo_bpm, "rtt_ms": 0.0,
                                       "reason": decision.reason, "alternates": "[]"})
            return RouteResult(session_id, decision.mode, decision.reason, None, expires_at, ())
        mode = decision.mode.value

        def routed(c: Candidate, with_ticket: bool) -> RoutedEdge:
            entry = self.registry.edges[c.edge_id]
            ticket = None
            if with_ticket:
                ticket = mint_route_ticket(self.private_key, session_id, q.user, c.edge_id, now, expires_at,
                                           q.piece or None, mode, secrets.token_urlsafe(ID_BYTES))
            return RoutedEdge(c.edge_id, entry.whip_url, ticket, c.rtt_ms, entry.region)

        # Signing is most of a route's cost, so alternates get tickets only when the client asks.
        chosen = routed(decision.chosen, True)
        alternates = tuple(routed(c, q.alternate_tickets) for c in decision.alternates)
        self.registry.note_routed(chosen.edge_id, session_id)
        self.store.session_changed(session_id, user=q.user, edge_id=chosen.edge_id, mode=mode, piece=q.piece,
                                   state="routed", routed_at=now, updated_at=now)
        self.store.route_recorded({
            "at": now, "user": q.user, "session_id": session_id, "edge_id": chosen.edge_id, "mode": mode,
            "tempo_bpm": q.tempo_bpm, "rtt_ms": round(chosen.rtt_ms, 2), "reason": decision.reason,
            "alternates": ",".join(a.edge_id for a in alternates),
        })
        return RouteResult(session_id, decision.mode, decision.reason, chosen, expires_at, alternates)
