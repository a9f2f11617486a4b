"""Protobuf ↔ domain converters: pure functions, no I/O (so they are testable alone)."""

from __future__ import annotations

from typing import Any

from ._proto.seminote.v1 import edge_pb2, fleet_pb2, registry_pb2, router_pb2
from .dispatch import RouteQuery, RouteResult
from .registry import EdgeEntry, EdgeState, LoadSnapshot, Registration, SessionRecord
from .router import Mode

MODE_TO_PB = {
    Mode.LIGHT: edge_pb2.MODE_LIGHT,
    Mode.DETAILED: edge_pb2.MODE_DETAILED,
    Mode.ON_DEVICE: edge_pb2.MODE_ON_DEVICE,
}
MODE_NAME_TO_PB = {"light": edge_pb2.MODE_LIGHT, "detailed": edge_pb2.MODE_DETAILED,
                   "on_device": edge_pb2.MODE_ON_DEVICE}
PB_TO_MODE_NAME = {v: k for k, v in MODE_NAME_TO_PB.items()}
STATE_TO_PB = {
    EdgeState.SERVING: edge_pb2.EDGE_STATE_SERVING,
    EdgeState.CORDONED: edge_pb2.EDGE_STATE_CORDONED,
    EdgeState.DRAINING: edge_pb2.EDGE_STATE_DRAINING,
    EdgeState.DRAINED: edge_pb2.EDGE_STATE_DRAINED,
    EdgeState.STALE: edge_pb2.EDGE_STATE_STALE,
    EdgeState.DISCONNECTED: edge_pb2.EDGE_STATE_DISCONNECTED,
}
PB_TO_STATE_NAME = {v: k.value for k, v in STATE_TO_PB.items()}


def session_from_pb(s: edge_pb2.SessionInfo) -> SessionRecord:
    return SessionRecord(s.session_id, s.user, PB_TO_MODE_NAME.get(s.mode, ""), s.piece, s.started_at)


def session_to_pb(s: SessionRecord) -> edge_pb2.SessionInfo:
    return edge_pb2.SessionInfo(session_id=s.session_id, user=s.user, mode=MODE_NAME_TO_PB.get(s.mode, edge_pb2.MODE_UNSPECIFIED),
                                piece=s.piece, started_at=s.started_at)


def registration_from_pb(r: registry_pb2.Register) -> Registration:
    return Registration(
        edge_id=r.edge_id, region=r.region, lat=r.lat, lon=r.lon, whip_url=r.whip_url, capacity=r.capacity,
        detailed_mode=r.capabilities.detailed_mode, model_loaded=r.capabilities.model_loaded,
        features=tuple(r.capabilities.features), instance_id=r.instance_id, version=r.version,
        cordoned=r.cordoned, sessions=tuple(session_from_pb(s) for s in r.sessions),
    )


def load_from_pb(load: edge_pb2.Load) -> LoadSnapshot:
    return LoadSnapshot(
        sessions_light=load.sessions_light, sessions_detailed=load.sessions_detailed,
        cpu_percent=load.cpu_percent, latency_p99_ms=load.latency_p99_ms, outbox_depth=load.outbox_depth,
        accepting=load.accepting, session_ids=tuple(load.session_ids),
    )


def edge_to_pb(e: EdgeEntry) -> edge_pb2.Edge:
    load = e.load
    return edge_pb2.Edge(
        edge_id=e.edge_id, region=e.region, lat=e.lat, lon=e.lon, whip_url=e.whip_url, capacity=e.capacity,
        capabilities=edge_pb2.Capabilities(detailed_mode=e.detailed_mode, model_loaded=e.model_loaded,
                                           features=list(e.features)),
        state=STATE_TO_PB[e.state],
        load=edge_pb2.Load(sessions_light=load.sessions_light, sessions_detailed=load.sessions_detailed,
                           cpu_percent=load.cpu_percent, latency_p99_ms=load.latency_p99_ms,
                           outbox_depth=load.outbox_depth, session_ids=list(e.sessions),
                           accepting=load.accepting),
        pending_sessions=len(e.pending), registered_at=e.registered_at, last_report_at=e.last_report_at,
        drain_deadline=e.drain_deadline, cordoned=e.cordoned, version=e.version,
    )


def route_query_from_pb(r: router_pb2.RouteRequest) -> RouteQuery:
    return RouteQuery(
        user=r.user, lat=r.lat if r.has_location else None, lon=r.lon if r.has_location else None,
        region=r.region, rtts={x.edge_id: x.rtt_ms for x in r.rtts}, piece=r.piece, tempo_bpm=r.tempo_bpm,
        prefer_detailed=r.prefer_detailed, alternate_tickets=r.alternate_tickets,
    )


def route_result_to_pb(res: RouteResult) -> router_pb2.RouteResponse:
    out = router_pb2.RouteResponse(session_id=res.session_id, mode=MODE_TO_PB[res.mode], reason=res.reason,
                                   expires_at=res.expires_at)
    if res.edge is not None:
        out.edge_id, out.whip_url, out.ticket = res.edge.edge_id, res.edge.whip_url, res.edge.ticket or ""
        out.rtt_ms, out.region = res.edge.rtt_ms, res.edge.region
    for a in res.alternates:
        out.alternates.add(edge_id=a.edge_id, whip_url=a.whip_url, ticket=a.ticket or "", rtt_ms=a.rtt_ms)
    return out


def route_result_to_json(res: RouteResult) -> dict[str, Any]:
    """The JSON gateway's body: ``{edge_id, whip_url, ticket, mode, expires_at, alternates, ...}``."""
    edge = res.edge
    return {
        "edge_id": edge.edge_id if edge else None,
        "whip_url": edge.whip_url if edge else None,
        "ticket": edge.ticket if edge else None,
        "mode": res.mode.value,
        "expires_at": res.expires_at,
        "alternates": [{"edge_id": a.edge_id, "whip_url": a.whip_url, "ticket": a.ticket,
                        "rtt_ms": round(a.rtt_ms, 2)} for a in res.alternates],
        "session_id": res.session_id,
        "reason": res.reason,
        "rtt_ms": round(edge.rtt_ms, 2) if edge else None,
        "region": edge.region if edge else None,
    }


def session_row_to_pb(row: dict[str, Any]) -> fleet_pb2.Session:
    return fleet_pb2.Session(
        session_id=row["session_id"], user=row.get("user") or "", edge_id=row.get("edge_id") or "",
        mode=MODE_NAME_TO_PB.get(row.get("mode") or "", edge_pb2.MODE_UNSPECIFIED), piece=row.get("piece") or "",
        state=row.get("state") or "", routed_at=row.get("routed_at") or 0.0,
        updated_at=row.get("updated_at") or 0.0,
    )
