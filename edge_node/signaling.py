"""The edge's HTTP face (aiohttp): WHIP ingest, session resources, health, metrics, the practice page.

| route | what |
|---|---|
| ``POST /v1/whip`` | WHIP (RFC 9725) offer, ``Authorization: Bearer <ticket>`` → ``201``, ``Location``, SDP answer |
| ``DELETE /v1/sessions/{id}`` | end the session (same bearer ticket) → ``204`` |
| ``PATCH /v1/sessions/{id}`` | trickle ICE candidates (``application/trickle-ice-sdpfrag``) → ``204`` |
| ``GET /healthz``, ``/readyz`` | process alive; accepting sessions (``503`` when full or draining) |
| ``GET /metrics`` | Prometheus text |
| ``GET /`` | the browser practice page (``/static/...`` its assets) |
| ``POST /v1/dev/ticket`` | a ticket for this edge, to loopback clients, only with ``server.dev_tickets`` |

Every refusal is JSON ``{"error": code, "message": reason}`` with a status that says whose fault it
is: 400 malformed SDP, 401 missing/invalid/expired/forged ticket, 403 ticket for another edge or
already used, 404 unknown session, 409 session already open, 413 body too large, 415 not
``application/sdp``, 422 an offer the edge cannot serve (no audio, video, no Opus, no data channel),
503 full or draining (with ``Retry-After``). Domain errors are translated here and only here.
"""

from __future__ import annotations

import ipaddress
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from aiortc.sdp import candidate_from_sdp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import (
    CapacityExceeded,
    ConfigError,
    EdgeDraining,
    EdgeOverloaded,
    OfferRejected,
    SessionExists,
    SessionNotFound,
    TicketError,
    TicketGuardFull,
    TicketReplayed,
    TicketWrongEdge,
)
from .metrics import CONTENT_TYPE_LATEST, EdgeMetrics
from .sessions import SessionManager
from .settings import EdgeSettings, ServerSettings
from .tickets import TicketClaims, load_private_key, load_public_key, mint_ticket

log = structlog.get_logger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
MANAGER_KEY = web.AppKey("manager", SessionManager)
SETTINGS_KEY = web.AppKey("settings", EdgeSettings)
SIGNER_KEY = web.AppKey("signer", Ed25519PrivateKey)
SDP_TYPE = "application/sdp"
TRICKLE_TYPE = "application/trickle-ice-sdpfrag"


def load_ticket_keys(server: ServerSettings) -> tuple[list[Ed25519PublicKey], Ed25519PrivateKey | None]:
    """The keys that verify tickets (and the signing key, for a standalone edge that has one)."""
    private = load_private_key(server.ticket_private_key) if server.ticket_private_key else None
    if server.ticket_public_key:
        public = [load_public_key(server.ticket_public_key)]
    elif private is not None:
        public = [private.public_key()]
    else:
        raise ConfigError(
            "server.ticket_public_key",
            "no key to verify session tickets with (set SEMINOTE_EDGE_SERVER__TICKET_PUBLIC_KEY)",
        )
    return public, private


def create_app(settings: EdgeSettings, metrics: EdgeMetrics | None = None) -> web.Application:
    """The edge's aiohttp application; its session manager starts and stops with the app."""
    server = settings.server
    # control-plane agent (issue 4): with a control plane, its ticket key arrives on register.
    public_keys: list[Ed25519PublicKey] = []
    private_key: Ed25519PrivateKey | None = None
    if not settings.control.addr or server.ticket_public_key or server.ticket_private_key:
        public_keys, private_key = load_ticket_keys(server)
    if server.dev_tickets and private_key is None:
        raise ConfigError("server.dev_tickets", "needs server.ticket_private_key to sign tickets with")
    app = web.Application(client_max_size=server.max_body_bytes)
    manager = SessionManager(settings, public_keys, metrics)
    app[MANAGER_KEY] = manager
    app[SETTINGS_KEY] = settings
    if private_key is not None:
        app[SIGNER_KEY] = private_key

    async def manager_ctx(app: web.Application) -> Any:
        async with manager:
            yield

    app.cleanup_ctx.append(manager_ctx)
    add_public_routes(app, whip=whip_offer, delete=delete_session, patch=patch_session, healthz=healthz,
                      readyz=readyz, metrics=metrics_handler, dev_tickets=server.dev_tickets)
    return app


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_public_routes(app: web.Application, *, whip: Handler, delete: Handler, patch: Handler, healthz: Handler,
                      readyz: Handler, metrics: Handler, dev_tickets: bool) -> None:
    """The edge's public HTTP paths (DESIGN.md), whether one process serves them or the front of
    per-core workers does: WHIP and its session resource, probes, metrics, the practice page."""
    app.router.add_post("/v1/whip", whip)
    app.router.add_delete("/v1/sessions/{session_id}", delete)
    app.router.add_patch("/v1/sessions/{session_id}", patch)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/", index)
    if STATIC_DIR.is_dir():
        app.router.add_static("/static/", STATIC_DIR)
    if dev_tickets:
        app.router.add_post("/v1/dev/ticket", dev_ticket)


# ------------------------------------------------------------------------------ errors


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status, headers=headers)


def _ticket_error(exc: TicketError) -> web.Response:
    code = type(exc).__name__.removeprefix("Ticket").lower()
    if isinstance(exc, TicketGuardFull):
        return _error(503, "ticket_guard_full", exc.reason, {"Retry-After": "5"})
    if isinstance(exc, TicketWrongEdge | TicketReplayed):
        return _error(403, f"ticket_{code}", exc.reason)
    challenge = 'Bearer error="invalid_token"'
    return _error(401, f"ticket_{code}", exc.reason, {"WWW-Authenticate": challenge})


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _missing_ticket() -> web.Response:
    return _error(401, "ticket_missing", "send the session ticket as 'Authorization: Bearer <ticket>'",
                  {"WWW-Authenticate": "Bearer"})


async def _read_text(request: web.Request, limit: int) -> str | web.Response:
    if request.content_length is not None and request.content_length > limit:
        return _error(413, "body_too_large", f"request bodies are at most {limit} bytes")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, "body_too_large", f"request bodies are at most {limit} bytes")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return _error(400, "malformed_sdp", "body is not UTF-8 text")


# ---------------------------------------------------------------------------- handlers


async def whip_offer(request: web.Request) -> web.StreamResponse:
    manager = request.app[MANAGER_KEY]
    metrics = manager.metrics
    limit = manager.server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        metrics.offers_rejected.labels("body_too_large").inc()
        return _error(413, "body_too_large", f"request bodies are at most {limit} bytes")
    token = _bearer(request)
    if token is None:
        metrics.offers_rejected.labels("ticket_missing").inc()
        return _missing_ticket()
    if request.content_type != SDP_TYPE:
        metrics.offers_rejected.labels("content_type").inc()
        return _error(415, "unsupported_media_type", f"a WHIP offer is {SDP_TYPE}, not {request.content_type}")
    text = await _read_text(request, limit)
    if isinstance(text, web.Response):
        metrics.offers_rejected.labels("body").inc()
        return text
    try:
        session, answer = await manager.open(token, text)
    except TicketError as exc:
        metrics.offers_rejected.labels(f"ticket_{type(exc).__name__.removeprefix('Ticket').lower()}").inc()
        return _ticket_error(exc)
    except OfferRejected as exc:
        metrics.offers_rejected.labels(exc.code).inc()
        status = 400 if exc.code == "malformed_sdp" else 422
        return _error(status, exc.code, exc.reason)
    except (CapacityExceeded, EdgeDraining, EdgeOverloaded) as exc:
        code = {CapacityExceeded: "at_capacity", EdgeDraining: "draining", EdgeOverloaded: "overloaded"}[type(exc)]
        metrics.offers_rejected.labels(code).inc()
        return _error(503, code, exc.reason, {"Retry-After": str(exc.retry_after_s)})
    except SessionExists as exc:
        metrics.offers_rejected.labels("session_exists").inc()
        return _error(409, "session_exists", exc.reason)
    location = f"/v1/sessions/{session.id}"
    if manager.server.public_url:
        location = manager.server.public_url.rstrip("/") + location
    return web.Response(
        status=201, text=answer, content_type=SDP_TYPE,
        headers={"Location": location, "ETag": f'"{session.id}"'},
    )


def _session_for(request: web.Request) -> Any:
    manager = request.app[MANAGER_KEY]
    token = _bearer(request)
    if token is None:
        return _missing_ticket()
    try:
        return manager.get(request.match_info["session_id"], token)
    except SessionNotFound as exc:
        return _error(404, "session_not_found", exc.reason)
    except TicketError as exc:
        return _error(403, "ticket_mismatch", exc.reason)


async def delete_session(request: web.Request) -> web.StreamResponse:
    session = _session_for(request)
    if isinstance(session, web.Response):
        return session
    await request.app[MANAGER_KEY].close(session, "deleted")
    return web.Response(status=204)


async def patch_session(request: web.Request) -> web.StreamResponse:
    """Trickle ICE: add the client's late candidates. ICE restarts are not supported (aiortc)."""
    session = _session_for(request)
    if isinstance(session, web.Response):
        return session
    if request.content_type != TRICKLE_TYPE:
        return _error(415, "unsupported_media_type", f"PATCH takes {TRICKLE_TYPE}")
    text = await _read_text(request, request.app[MANAGER_KEY].server.max_body_bytes)
    if isinstance(text, web.Response):
        return text
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if any(line.startswith(("a=ice-ufrag:", "a=ice-pwd:")) for line in lines) and session.pc is not None:
        ufrag = next(line.split(":", 1)[1] for line in lines if line.startswith("a=ice-ufrag:"))
        remote = session.pc.remoteDescription
        if remote is not None and f"a=ice-ufrag:{ufrag}" not in remote.sdp:
            return _error(422, "ice_restart_unsupported", "ICE restart is not supported; open a new session")
    added = 0
    pc = session.pc
    for line in lines:
        if not line.startswith("a=candidate:") or pc is None:
            continue
        try:
            candidate = candidate_from_sdp(line.removeprefix("a="))
        except Exception:  # aioice's parser raises whatever the bad field provokes
            return _error(400, "malformed_candidate", "a candidate line does not parse")
        candidate.sdpMid = next(
            (t.mid for t in pc.getTransceivers() if t.kind == "audio"), None
        )
        try:
            await pc.addIceCandidate(candidate)
        except Exception as exc:  # aioice refuses candidates it cannot use (closed, bad address)
            return _error(400, "candidate_refused", f"candidate refused: {type(exc).__name__}")
        added += 1
    return web.Response(status=204, headers={"X-Candidates-Added": str(added)})


async def healthz(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok", "edge_id": request.app[SETTINGS_KEY].edge_id})


async def readyz(request: web.Request) -> web.StreamResponse:
    manager = request.app[MANAGER_KEY]
    body = {
        "ready": manager.accepting, "sessions": manager.count, "max_sessions": manager.server.max_sessions,
    }
    headers = None if manager.accepting else {"Retry-After": str(manager.server.retry_after_s)}
    return web.json_response(body, status=200 if manager.accepting else 503, headers=headers)


async def metrics_handler(request: web.Request) -> web.StreamResponse:
    body = request.app[MANAGER_KEY].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def index(request: web.Request) -> web.StreamResponse:
    page = STATIC_DIR / "index.html"
    if not page.is_file():
        return _error(404, "no_page", "the practice page is not installed")
    return web.FileResponse(page, headers={"Cache-Control": "no-cache"})


def _is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


async def dev_ticket(request: web.Request) -> web.StreamResponse:
    """A ticket for this edge, minted with its own key: local development without a control plane."""
    if not _is_loopback(request.remote):
        return _error(403, "dev_tickets_loopback_only", "dev tickets are only handed to loopback clients")
    settings = request.app[SETTINGS_KEY]
    body: dict[str, Any] = {}
    if request.can_read_body:
        text = await _read_text(request, 4096)
        if isinstance(text, web.Response):
            return text
        try:
            parsed = json.loads(text) if text.strip() else {}
        except ValueError:
            return _error(400, "bad_json", "body must be a JSON object or empty")
        if not isinstance(parsed, dict):
            return _error(400, "bad_json", "body must be a JSON object or empty")
        body = parsed
    now = time.time()
    try:
        claims = TicketClaims(
            session_id=f"dev-{uuid.uuid4().hex[:16]}", user=str(body.get("user") or "local"),
            edge_id=settings.edge_id,
            iat=now, exp=now + settings.server.dev_ticket_ttl_s,
            piece=body.get("piece"), mode=body.get("mode"),
        )
    except ValueError as exc:
        return _error(400, "bad_claims", str(exc))
    token = mint_ticket(request.app[SIGNER_KEY], claims)
    return web.json_response({
        "ticket": token, "session_id": claims.session_id, "edge_id": settings.edge_id,
        "whip_url": "/v1/whip", "expires_at": claims.exp, "mode": claims.mode,
    })
