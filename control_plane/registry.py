"""The edge registry: live state of every edge, fed by their Connect streams, read by the router.

Live state is in memory because routing reads it thousands of times a second; the :class:`Store`
keeps what must survive a restart (edges with operator cordon/drain, sessions). An edge is routable
only while its stream is open, its last report is within ``ttl_s``, it is not cordoned or draining,
and it has a free slot counting sessions routed to it but not yet seen connected (``pending``).

Spatial lookup: a :class:`~control_plane.fleet_index.FleetIndex` holds the fleet as columns grouped by
region (positions, load, capacity, routability), written in place on every report and route and
rebuilt lazily when edges join or leave; a route ranks regions by centroid and runs the compiled
policy over the nearest ``regions_scanned`` regions that have routable edges, not over the fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import heapq
import math
import random
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import structlog

from .errors import DuplicateEdge, InvalidRequest, UnknownEdge, WrongState
from .fleet_index import FleetIndex, Member
from .router import EARTH_RADIUS_KM, Candidate, CandidateSet, Decision, Plan, Policy, routable
from .settings import RegistrySettings
from .store import Store

log = structlog.get_logger(__name__)

EDGE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
REGION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_URL_CHARS = 2048
MAX_CAPACITY = 100_000
MAX_FIELD_CHARS = 256
MAX_FEATURES = 32
TOUCH_INTERVAL_S = 5.0  # how often "last seen" times are written to the store


class EdgeState(enum.StrEnum):
    SERVING = "serving"
    CORDONED = "cordoned"
    DRAINING = "draining"
    DRAINED = "drained"
    STALE = "stale"
    DISCONNECTED = "disconnected"


@dataclass(slots=True)
class SessionRecord:
    session_id: str
    user: str = ""
    mode: str = ""
    piece: str = ""
    started_at: float = 0.0


@dataclass(slots=True)
class Registration:
    """A validated Register message."""

    edge_id: str
    region: str
    lat: float
    lon: float
    whip_url: str
    capacity: int
    detailed_mode: bool
    model_loaded: bool
    features: tuple[str, ...]
    instance_id: str
    version: str
    cordoned: bool
    sessions: tuple[SessionRecord, ...]


@dataclass(slots=True)
class LoadSnapshot:
    sessions_light: int = 0
    sessions_detailed: int = 0
    cpu_percent: float = 0.0
    latency_p99_ms: float = 0.0
    outbox_depth: int = 0
    accepting: bool = True
    session_ids: tuple[str, ...] = ()


class EdgeStream:
    """The control plane's end of one edge's Connect stream: a queue of messages to send down."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self.outbox: asyncio.Queue[object | None] = asyncio.Queue()
        self.closed = False

    def send(self, message: object) -> None:
        if not self.closed:
            self.outbox.put_nowait(message)

    def close(self) -> None:
        """Ends the stream's send loop (the edge connected again or the control plane stops)."""
        if not self.closed:
            self.closed = True
            self.outbox.put_nowait(None)


def unit_vector(lat: float, lon: float) -> tuple[float, float, float]:
    p, lam = math.radians(lat), math.radians(lon)
    return (math.cos(p) * math.cos(lam), math.cos(p) * math.sin(lam), math.sin(p))


def chord_to_km(chord: float) -> float:
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, chord / 2))


@dataclass(slots=True)
class EdgeEntry:
    """Everything the control plane knows about one edge right now."""

    edge_id: str
    region: str
    lat: float
    lon: float
    whip_url: str
    capacity: int
    detailed_mode: bool = False
    model_loaded: bool = False
    features: tuple[str, ...] = ()
    version: str = ""
    instance_id: str = ""
    registered_at: float = 0.0
    connected: bool = False
    stale: bool = False
    last_report_mono: float = 0.0
    last_report_at: float = 0.0
    disconnected_mono: float = 0.0
    cordoned: bool = False
    drain_deadline: float = 0.0
    drained: bool = False
    load: LoadSnapshot = field(default_factory=LoadSnapshot)
    sessions: dict[str, SessionRecord] = field(default_factory=dict)
    pending: dict[str, float] = field(default_factory=dict)  # session_id -> monotonic expiry
    stream: EdgeStream | None = None
    vec: tuple[float, float, float] = (1.0, 0.0, 0.0)
    slot: int = -1  # index in the registry's FleetIndex columns (valid while the index is current)

    @property
    def state(self) -> EdgeState:
        if not self.connected:
            return EdgeState.DISCONNECTED
        if self.stale:
            return EdgeState.STALE
        if self.drain_deadline:
            return EdgeState.DRAINED if self.drained else EdgeState.DRAINING
        if self.cordoned:
            return EdgeState.CORDONED
        return EdgeState.SERVING

    @property
    def in_use(self) -> int:
        reported = max(len(self.sessions), self.load.sessions_light + self.load.sessions_detailed)
        return reported + len(self.pending)

    @property
    def routable(self) -> bool:
        return routable(self.state is EdgeState.SERVING, not self.stale, self.cordoned or not self.load.accepting,
                        self.in_use, self.capacity)


def validate_registration(reg: Registration) -> None:
    """Raises :class:`InvalidRequest` naming the first bad field."""
    if not EDGE_ID_RE.match(reg.edge_id):
        raise InvalidRequest("edge_id", "1-64 characters of letters, digits, '.', '_' or '-'")
    if not REGION_RE.match(reg.region):
        raise InvalidRequest("region", "1-64 characters of letters, digits, '.', '_' or '-'")
    validate_location(reg.lat, reg.lon)
    if len(reg.whip_url) > MAX_URL_CHARS:
        raise InvalidRequest("whip_url", f"longer than {MAX_URL_CHARS} characters")
    parts = urlsplit(reg.whip_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidRequest("whip_url", "must be an absolute http(s) URL")
    if not 1 <= reg.capacity <= MAX_CAPACITY:
        raise InvalidRequest("capacity", f"must be 1..{MAX_CAPACITY}")
    if not reg.instance_id or len(reg.instance_id) > MAX_FIELD_CHARS:
        raise InvalidRequest("instance_id", f"must be 1..{MAX_FIELD_CHARS} characters")
    if len(reg.version) > MAX_FIELD_CHARS:
        raise InvalidRequest("version", f"longer than {MAX_FIELD_CHARS} characters")
    if len(reg.features) > MAX_FEATURES or any(len(f) > MAX_FIELD_CHARS for f in reg.features):
        raise InvalidRequest("capabilities.features", f"at most {MAX_FEATURES} of {MAX_FIELD_CHARS} characters")
    if len(reg.sessions) > reg.capacity * 2 + 16:
        raise InvalidRequest("sessions", "far more sessions than capacity")
    for s in reg.sessions:
        validate_session_id(s.session_id, "sessions.session_id")


def validate_location(lat: float, lon: float) -> None:
    if not (math.isfinite(lat) and -90.0 <= lat <= 90.0):
        raise InvalidRequest("lat", f"must be a latitude in -90..90, got {lat}")
    if not (math.isfinite(lon) and -180.0 <= lon <= 180.0):
        raise InvalidRequest("lon", f"must be a longitude in -180..180, got {lon}")


def validate_session_id(session_id: str, field_name: str) -> None:
    if not session_id or len(session_id) > MAX_FIELD_CHARS:
        raise InvalidRequest(field_name, f"must be 1..{MAX_FIELD_CHARS} characters")


class Registry:
    """Edges by id and by region, their streams and liveness. ``async with Registry(...)``."""

    def __init__(self, settings: RegistrySettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.edges: dict[str, EdgeEntry] = {}
        self._fleet = FleetIndex()
        self._fleet_stale = False  # membership changed since the index was built
        self.version = 0  # bumped whenever edges join or leave (route workers then reload membership)
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False
        self._seen: dict[str, float] = {}
        self._last_touch_mono = 0.0
        # (expiry, edge_id, session_id) of routed sessions; entries already connected are skipped lazily.
        self._pending_heap: list[tuple[float, str, str]] = []
        self.on_change: list[asyncio.Event] = []  # set whenever an edge's state or load changes

    async def __aenter__(self) -> Registry:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Loads known edges (as disconnected, keeping operator cordon/drain) and starts the sweeper."""
        if self._closed:
            raise RuntimeError("Registry is closed; make a new one")
        if self._sweeper is not None:
            return
        for stored in await self.store.load_edges():
            entry = EdgeEntry(stored.edge_id, stored.region, stored.lat, stored.lon, stored.whip_url,
                              stored.capacity, cordoned=stored.cordoned, drain_deadline=stored.drain_deadline,
                              disconnected_mono=time.monotonic(), last_report_at=stored.last_seen_at,
                              vec=unit_vector(stored.lat, stored.lon))
            self._index(entry)
        log.info("registry loaded", edges=len(self.edges))
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="registry-sweep")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for entry in self.edges.values():
            if entry.stream is not None:
                entry.stream.close()
        await self.store.touch_edges(self._seen)

    # ------------------------------------------------------------------ index

    def _index(self, entry: EdgeEntry) -> None:
        self.edges.pop(entry.edge_id, None)
        self.edges[entry.edge_id] = entry
        self._membership_changed()

    def _unindex(self, entry: EdgeEntry) -> None:
        if self.edges.get(entry.edge_id) is entry:
            del self.edges[entry.edge_id]
            self._membership_changed()

    def _membership_changed(self) -> None:
        self.version += 1
        self._fleet_stale = True

    @property
    def fleet(self) -> FleetIndex:
        """The routing columns, rebuilt here (not per registration) when edges joined or left."""
        if self._fleet_stale:
            entries = list(self.edges.values())
            fleet = FleetIndex([Member(e.edge_id, e.region, e.vec, e.capacity, e.detailed_mode and e.model_loaded)
                                for e in entries])
            for e in entries:
                e.slot = fleet.slots[e.edge_id]
                fleet.set_load(e.slot, e.in_use, self._ok(e), e.last_report_mono)
            self._fleet, self._fleet_stale = fleet, False
        return self._fleet

    @staticmethod
    def _ok(e: EdgeEntry) -> bool:
        return e.state is EdgeState.SERVING and e.load.accepting

    def snapshot(self, full: bool) -> dict[str, object]:
        """What route workers need to route like this process (``full``: membership too, else loads)."""
        fleet = self.fleet
        snap: dict[str, object] = {"version": self.version, "loads": fleet.loads()}
        if full:
            snap["members"] = fleet.membership()
            snap["whip_urls"] = [self.edges[m.edge_id].whip_url for m in fleet.members]
        return snap

    def region_centroid(self, region: str) -> tuple[float, float, float] | None:
        return self.fleet.centroid(region)

    def _changed(self, entry: EdgeEntry | None = None) -> None:
        if (entry is not None and not self._fleet_stale and entry.slot >= 0
                and self.edges.get(entry.edge_id) is entry):
            self._fleet.set_load(entry.slot, entry.in_use, self._ok(entry), entry.last_report_mono)
        for event in self.on_change:
            event.set()

    # ------------------------------------------------------------------ edge stream side

    async def register(self, reg: Registration, stream: EdgeStream) -> EdgeEntry:
        """Accepts a validated registration on ``stream``; returns the live entry.

        A fresh live stream of another process for the same id → :class:`DuplicateEdge`. The same
        process reconnecting (same ``instance_id``), or a stale/disconnected holder, is replaced.
        """
        validate_registration(reg)
        now, mono = time.time(), time.monotonic()
        old = self.edges.get(reg.edge_id)
        if old is not None and old.connected and not old.stale and old.instance_id != reg.instance_id:
            raise DuplicateEdge(reg.edge_id)
        if old is None and len(self.edges) >= self.settings.max_edges:
            raise InvalidRequest("edge_id", f"the registry is full ({self.settings.max_edges} edges)")
        if old is not None and old.stream is not None and old.stream is not stream:
            old.stream.close()
        entry = EdgeEntry(
            reg.edge_id, reg.region, reg.lat, reg.lon, reg.whip_url, reg.capacity,
            detailed_mode=reg.detailed_mode, model_loaded=reg.model_loaded, features=reg.features,
            version=reg.version, instance_id=reg.instance_id, registered_at=now, connected=True,
            last_report_mono=mono, last_report_at=now,
            cordoned=(old.cordoned if old is not None else False) or reg.cordoned,
            drain_deadline=old.drain_deadline if old is not None else 0.0,
            stream=stream, vec=unit_vector(reg.lat, reg.lon),
        )
        if old is not None:
            entry.pending = {k: v for k, v in old.pending.items() if v > mono}
        entry.sessions = {s.session_id: s for s in reg.sessions}
        entry.load = LoadSnapshot(
            sessions_light=sum(1 for s in reg.sessions if s.mode != "detailed"),
            sessions_detailed=sum(1 for s in reg.sessions if s.mode == "detailed"),
            accepting=not entry.cordoned, session_ids=tuple(entry.sessions),
        )
        self._index(entry)
        ended = set(old.sessions) - set(entry.sessions) if old is not None else set()
        for sid in ended:
            self.store.session_changed(sid, state="ended")
        for s in reg.sessions:
            entry.pending.pop(s.session_id, None)
            self.store.session_changed(s.session_id, edge_id=entry.edge_id, state="active", user=s.user,
                                       mode=s.mode, piece=s.piece, routed_at=s.started_at or now)
        await self.store.upsert_edge({
            "edge_id": entry.edge_id, "region": entry.region, "lat": entry.lat, "lon": entry.lon,
            "whip_url": entry.whip_url, "capacity": entry.capacity,
            "capabilities": {"detailed_mode": entry.detailed_mode, "model_loaded": entry.model_loaded,
                             "features": list(entry.features)},
            "cordoned": int(entry.cordoned), "drain_deadline": entry.drain_deadline,
            "registered_at": now, "last_seen_at": now, "version": entry.version,
        })
        log.info("edge registered", edge_id=entry.edge_id, region=entry.region, capacity=entry.capacity,
                 sessions=len(entry.sessions), replaced=old is not None and old.connected)
        self._changed(entry)
        return entry

    def report(self, edge_id: str, stream: EdgeStream, load: LoadSnapshot,
               new_sessions: Iterable[SessionRecord] = (), drained: bool = False) -> None:
        """A load report on ``stream``. Reports on a replaced stream are ignored."""
        entry = self.edges.get(edge_id)
        if entry is None or entry.stream is not stream:
            return
        if len(load.session_ids) > self.settings.max_sessions_per_report:
            raise InvalidRequest("load.session_ids", f"more than {self.settings.max_sessions_per_report}")
        current = set(load.session_ids)
        if any(not sid or len(sid) > MAX_FIELD_CHARS for sid in current):
            raise InvalidRequest("load.session_ids", f"session ids must be 1..{MAX_FIELD_CHARS} characters")
        mono, now = time.monotonic(), time.time()
        entry.last_report_mono, entry.last_report_at = mono, now
        was_stale, entry.stale = entry.stale, False
        self._seen[edge_id] = now
        details = {s.session_id: s for s in new_sessions}
        previous = entry.sessions
        sessions: dict[str, SessionRecord] = {}
        for sid in current:
            record = previous.get(sid) or details.get(sid)
            if record is None:
                record = SessionRecord(sid)
            sessions[sid] = record
            if sid not in previous:
                entry.pending.pop(sid, None)
                fields: dict[str, object] = {"edge_id": edge_id, "state": "active"}
                if sid in details:
                    d = details[sid]
                    fields.update(user=d.user, mode=d.mode, piece=d.piece)
                self.store.session_changed(sid, **fields)
        for sid in previous.keys() - current:
            self.store.session_changed(sid, state="ended")
        entry.sessions = sessions
        entry.load = load
        if drained and entry.drain_deadline and not entry.drained:
            entry.drained = True
            log.info("edge drained", edge_id=edge_id)
        if was_stale:
            log.info("edge fresh again", edge_id=edge_id)
        self._changed(entry)

    def disconnect(self, edge_id: str, stream: EdgeStream) -> None:
        entry = self.edges.get(edge_id)
        stream.close()
        if entry is None or entry.stream is not stream:
            return
        entry.connected = False
        entry.stream = None
        entry.disconnected_mono = time.monotonic()
        log.info("edge disconnected", edge_id=edge_id)
        self._changed(entry)

    # ------------------------------------------------------------------ operator side

    def get(self, edge_id: str) -> EdgeEntry:
        entry = self.edges.get(edge_id)
        if entry is None:
            raise UnknownEdge(edge_id)
        return entry

    def list_edges(self, region: str = "") -> list[EdgeEntry]:
        entries = [e for e in self.edges.values() if e.region == region] if region else self.edges.values()
        return sorted(entries, key=lambda e: (e.region, e.edge_id))

    async def cordon(self, edge_id: str, command: object | None) -> EdgeEntry:
        entry = self.get(edge_id)
        entry.cordoned = True
        await self.store.set_edge_admin(edge_id, True, entry.drain_deadline)
        if entry.stream is not None and command is not None:
            entry.stream.send(command)
        log.info("edge cordoned", edge_id=edge_id)
        self._changed(entry)
        return entry

    async def uncordon(self, edge_id: str, command: object | None) -> EdgeEntry:
        entry = self.get(edge_id)
        if entry.drain_deadline and not entry.drained:
            raise WrongState(edge_id, entry.state, "a drain is in progress; wait for it to finish")
        entry.cordoned = False
        entry.drain_deadline = 0.0
        entry.drained = False
        await self.store.set_edge_admin(edge_id, False, 0.0)
        if entry.stream is not None and command is not None:
            entry.stream.send(command)
        log.info("edge uncordoned", edge_id=edge_id)
        self._changed(entry)
        return entry

    async def drain(self, edge_id: str, deadline: float, command: object | None) -> EdgeEntry:
        entry = self.get(edge_id)
        if not entry.connected:
            raise WrongState(edge_id, entry.state, "a disconnected edge cannot drain")
        if entry.drain_deadline and not entry.drained:
            return entry  # already draining: idempotent
        entry.cordoned = True
        entry.drain_deadline = deadline
        entry.drained = not entry.sessions and not entry.pending
        await self.store.set_edge_admin(edge_id, True, deadline)
        if entry.stream is not None and command is not None:
            entry.stream.send(command)
        log.info("edge draining", edge_id=edge_id, deadline=deadline, sessions=len(entry.sessions))
        self._changed(entry)
        return entry

    # ------------------------------------------------------------------ router side

    def candidates(self, vec: tuple[float, float, float], rtts: Mapping[str, float],
                   regions_scanned: int) -> CandidateSet:
        """Routable edges near ``vec`` (client unit vector) with their RTT (measured when given)."""
        fresh_since = time.monotonic() - self.settings.ttl_s  # exact TTL, whatever the sweeper's delay
        cs = self.fleet.candidates(vec, regions_scanned, fresh_since)
        if not rtts:
            return cs
        # Measured RTTs replace estimates, and measured edges count wherever they are.
        position = {edge_id: i for i, edge_id in enumerate(cs.edge_ids.tolist())}
        extra: list[Candidate] = []
        for edge_id, measured in rtts.items():
            if edge_id in position:
                cs.rtt_ms[position[edge_id]] = measured
            else:
                m = self.edges.get(edge_id)
                if m is not None and m.routable and m.last_report_mono >= fresh_since:
                    extra.append(Candidate(m.edge_id, measured, m.in_use, m.capacity, m.detailed_mode and m.model_loaded))
        return CandidateSet.concat([cs, CandidateSet.of(extra)]) if extra else cs

    def decide_near(self, vec: tuple[float, float, float], p: Plan, policy: Policy, rng: random.Random,
                    regions_scanned: int) -> Decision:
        """The policy over the routable edges near ``vec`` (no measured RTTs), in one compiled call."""
        return self.fleet.decide(vec, p, policy, rng, regions_scanned, time.monotonic() - self.settings.ttl_s)

    def note_routed(self, edge_id: str, session_id: str) -> None:
        """Counts a just-routed session against the edge until it connects or ``pending_ttl_s`` passes."""
        entry = self.edges.get(edge_id)
        if entry is not None:
            expiry = time.monotonic() + self.settings.pending_ttl_s
            entry.pending[session_id] = expiry
            heapq.heappush(self._pending_heap, (expiry, edge_id, session_id))
            if not self._fleet_stale and entry.slot >= 0:
                self._fleet.in_use[entry.slot] += 1

    # ------------------------------------------------------------------ housekeeping

    async def sweep(self) -> None:
        """Marks silent edges stale, expires pending routes and long-gone edges, ends overdue drains."""
        mono, now = time.monotonic(), time.time()
        changed: dict[str, EdgeEntry] = {}
        heap = self._pending_heap
        while heap and heap[0][0] <= mono:
            expiry, edge_id, sid = heapq.heappop(heap)
            pending_entry = self.edges.get(edge_id)
            if pending_entry is not None and pending_entry.pending.get(sid) == expiry:
                del pending_entry.pending[sid]
                self.store.session_changed(sid, state="expired")
                changed[edge_id] = pending_entry
        removed = False
        for entry in list(self.edges.values()):
            if entry.connected and not entry.stale and mono - entry.last_report_mono > self.settings.ttl_s:
                entry.stale = True
                changed[entry.edge_id] = entry
                log.warning("edge stale", edge_id=entry.edge_id, silent_s=round(mono - entry.last_report_mono, 1))
            if entry.drain_deadline and not entry.drained and now >= entry.drain_deadline and not entry.sessions:
                entry.drained = True
                changed[entry.edge_id] = entry
            if not entry.connected and mono - entry.disconnected_mono > self.settings.remove_after_s:
                self._unindex(entry)
                for sid in entry.sessions:  # gone with the edge; nobody will report them ended
                    self.store.session_changed(sid, state="ended")
                await self.store.delete_edge(entry.edge_id)
                log.info("edge removed", edge_id=entry.edge_id)
                changed.pop(entry.edge_id, None)
                removed = True
        if mono - self._last_touch_mono >= TOUCH_INTERVAL_S:
            self._last_touch_mono = mono
            seen, self._seen = self._seen, {}
            await self.store.touch_edges(seen)
        for entry in changed.values():
            self._changed(entry)
        if removed and not changed:
            self._changed()

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval_s)
            try:
                await self.sweep()
            except Exception:  # one bad sweep must not stop liveness tracking
                log.exception("registry sweep failed")
