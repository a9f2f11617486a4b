"""JSON gateway for browsers: ``POST /v1/route`` → ``{edge_id, whip_url, ticket, mode, expires_at, alternates}``.

Runs in the control-plane process and calls the same :class:`Dispatcher` as the gRPC ``Route``.
Authenticated with a client API key (``Authorization: Bearer <key>`` or ``X-Api-Key``); CORS for the
practice page's origin. Errors are ``{"error": {"code", "message", "field"?}}`` with an HTTP status
mirroring the gRPC code (400 invalid, 401 no key, 413 too large, 415 not JSON, 503 no capacity).
"""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

from .convert import route_result_to_json
from .dispatch import Dispatcher, RouteQuery
from .errors import ControlPlaneError, InvalidRequest, NoCapacity
from .server import ROLE_ADMIN, ROLE_CLIENT, Authenticator
from .settings import GatewaySettings

NO_CAPACITY_RETRY_AFTER_S = 5
CORS_MAX_AGE_S = 600
_HTTP_STATUS = {"INVALID_ARGUMENT": 400, "NOT_FOUND": 404, "RESOURCE_EXHAUSTED": 503, "UNAVAILABLE": 503,
                "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "FAILED_PRECONDITION": 409}


def _error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    headers = {"Retry-After": str(NO_CAPACITY_RETRY_AFTER_S)} if code == "RESOURCE_EXHAUSTED" else None
    return web.json_response({"error": {"code": code, "message": message, **extra}}, status=status,
                             headers=headers)


def _number(body: dict[str, Any], name: str, default: float | None = None) -> float | None:
    value = body.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequest(name, "must be a finite number")
    return float(value)


def _string(body: dict[str, Any], name: str) -> str:
    value = body.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(name, "must be a string")
    return value


def query_from_json(body: Any) -> RouteQuery:
    """Validates the request body's shape (values are checked by the dispatcher)."""
    if not isinstance(body, dict):
        raise InvalidRequest("body", "must be a JSON object")
    rtts_raw = body.get("rtts") or {}
    if not isinstance(rtts_raw, dict):
        raise InvalidRequest("rtts", "must be an object of edge_id → milliseconds")
    rtts: dict[str, float] = {}
    for key, value in rtts_raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidRequest("rtts", f"rtt for {key!r} must be a number")
        rtts[str(key)] = float(value)
    prefer = body.get("prefer_detailed", False)
    if not isinstance(prefer, bool):
        raise InvalidRequest("prefer_detailed", "must be true or false")
    alternate_tickets = body.get("alternate_tickets", False)
    if not isinstance(alternate_tickets, bool):
        raise InvalidRequest("alternate_tickets", "must be true or false")
    return RouteQuery(
        user=_string(body, "user"), lat=_number(body, "lat"), lon=_number(body, "lon"),
        region=_string(body, "region"), rtts=rtts, piece=_string(body, "piece"),
        tempo_bpm=_number(body, "tempo_bpm", 0.0) or 0.0, prefer_detailed=prefer,
        alternate_tickets=alternate_tickets,
    )


class Gateway:
    """The aiohttp app and its runner. ``async with Gateway(...)``; ``port`` is bound after start."""

    def __init__(self, settings: GatewaySettings, dispatcher: Dispatcher, authenticator: Authenticator) -> None:
        self.settings = settings
        self.dispatcher = dispatcher
        self.authenticator = authenticator
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._closed = False

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.max_body_bytes, middlewares=[self._cors])
        app.router.add_post("/v1/route", self.handle_route)
        app.router.add_route("OPTIONS", "/v1/route", self.handle_preflight)
        app.router.add_get("/healthz", self.handle_health)
        return app

    async def start(self) -> None:
        if self._closed:
            raise RuntimeError("Gateway is closed; make a new one")
        if self._runner is not None:
            return
        self._runner = web.AppRunner(self.make_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.settings.port

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _allowed_origin(self, origin: str | None) -> str | None:
        if not origin:
            return None
        if "*" in self.settings.cors_origins:
            return origin
        return origin if origin in self.settings.cors_origins else None

    @web.middleware
    async def _cors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            response = exc
        origin = self._allowed_origin(request.headers.get("Origin"))
        if origin:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        return response

    async def handle_preflight(self, request: web.Request) -> web.Response:
        origin = self._allowed_origin(request.headers.get("Origin"))
        if origin is None:
            return web.Response(status=403)
        return web.Response(status=204, headers={
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type, X-Api-Key",
            "Access-Control-Max-Age": str(CORS_MAX_AGE_S),
        })

    async def handle_health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    def _authorised(self, request: web.Request) -> str | None:
        token = request.headers.get("X-Api-Key")
        if not token:
            scheme, _, rest = request.headers.get("Authorization", "").partition(" ")
            token = rest.strip() if scheme.lower() == "bearer" else None
        role = self.authenticator.role(token)
        return role if role in (ROLE_CLIENT, ROLE_ADMIN) else None

    async def handle_route(self, request: web.Request) -> web.Response:
        if self._authorised(request) is None:
            return _error(401, "UNAUTHENTICATED", "a client API key is required (Authorization: Bearer <key>)")
        if request.content_length is not None and request.content_length > self.settings.max_body_bytes:
            return _error(413, "INVALID_ARGUMENT", f"body larger than {self.settings.max_body_bytes} bytes")
        if request.content_type != "application/json":
            return _error(415, "INVALID_ARGUMENT", "body must be application/json")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, "INVALID_ARGUMENT", f"body larger than {self.settings.max_body_bytes} bytes")
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            return _error(400, "INVALID_ARGUMENT", "body is not valid JSON")
        try:
            result = self.dispatcher.route(query_from_json(body))
        except InvalidRequest as exc:
            return _error(400, "INVALID_ARGUMENT", str(exc), field=exc.field)
        except NoCapacity as exc:
            return _error(503, "RESOURCE_EXHAUSTED", str(exc))
        except ControlPlaneError as exc:
            name = exc.code.name
            return _error(_HTTP_STATUS.get(name, 500), name, str(exc))
        return web.json_response(route_result_to_json(result))
