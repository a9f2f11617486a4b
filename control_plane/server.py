"""gRPC services of the control plane and the interceptor that guards them.

* ``EdgeRegistry.Connect``: one bidirectional stream per edge (register → load reports ↔ commands).
* ``Router.Route``: the session router (see :mod:`control_plane.dispatch`).
* ``FleetAdmin``: operators' list/show/cordon/uncordon/drain, sessions, stats.

:class:`GuardInterceptor` checks credentials per service (edges: enrollment token; operators: admin
token; routing: client API key or admin token; health and reflection stay open for probes), decodes
requests itself so garbage bytes become INVALID_ARGUMENT instead of INTERNAL, and maps
:class:`ControlPlaneError` subclasses to their status codes in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

import grpc
import structlog

from . import convert
from ._proto.seminote.v1 import (
    edge_pb2,
    fleet_pb2,
    fleet_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    router_pb2,
    router_pb2_grpc,
)
from .dispatch import Dispatcher
from .errors import ControlPlaneError, InvalidRequest, PermissionDenied, ShuttingDown, Unauthenticated
from .registry import EdgeStream, Registry
from .settings import AuthSettings, RegistrySettings
from .store import SESSION_STATES, Store

log = structlog.get_logger(__name__)

ROLE_EDGE = "edge"
ROLE_ADMIN = "admin"
ROLE_CLIENT = "client"
REGISTRY_SERVICE = "seminote.v1.EdgeRegistry"
ROUTER_SERVICE = "seminote.v1.Router"
FLEET_SERVICE = "seminote.v1.FleetAdmin"
# Which credentials each service accepts. Services not listed here and not open are refused.
SERVICE_ROLES: dict[str, frozenset[str]] = {
    REGISTRY_SERVICE: frozenset({ROLE_EDGE}),
    ROUTER_SERVICE: frozenset({ROLE_CLIENT, ROLE_ADMIN}),
    FLEET_SERVICE: frozenset({ROLE_ADMIN}),
    "seminote.v1.Progress": frozenset({ROLE_ADMIN}),  # result sync (issue 5): progress queries
}
OPEN_SERVICES = frozenset({
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
})
MAX_LIST_SESSIONS = 10_000


class Authenticator:
    """Maps a bearer token to a role with constant-time comparisons."""

    def __init__(self, auth: AuthSettings) -> None:
        self._tokens: list[tuple[bytes, str]] = (
            [(t.encode(), ROLE_EDGE) for t in auth.enrollment_tokens]
            + [(t.encode(), ROLE_ADMIN) for t in auth.admin_tokens]
            + [(t.encode(), ROLE_CLIENT) for t in auth.client_api_keys]
        )

    def role(self, token: str | None) -> str | None:
        if not token:
            return None
        given = token.encode("utf-8", errors="replace")
        found: str | None = None
        for secret, role in self._tokens:
            if hmac.compare_digest(given, secret) and found is None:
                found = role
        return found


def bearer_token(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token:
                return token.strip()
    return None


def _status_of(exc: ControlPlaneError) -> grpc.StatusCode:
    return exc.code if exc.code is not grpc.StatusCode.INTERNAL else grpc.StatusCode.INTERNAL


def _refusing(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, details: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind that only aborts (never decodes the request)."""

    async def abort_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, details)

    async def abort_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(code, details)
        yield None  # pragma: no cover - abort raises

    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(abort_unary)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(abort_stream)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(abort_unary)
    return grpc.stream_stream_rpc_method_handler(abort_stream)


def _decoder(deserialize: Callable[[bytes], Any] | None, method: str) -> Callable[[bytes], Any]:
    def decode(raw: bytes) -> Any:
        if deserialize is None:
            return raw
        try:
            return deserialize(raw)
        except Exception as exc:  # protobuf raises DecodeError, or others for garbage
            raise InvalidRequest("request", f"not a valid message for {method}") from exc
    return decode


def _guarded(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """Same handler, decoding requests itself and mapping domain errors to status codes."""
    decode = _decoder(handler.request_deserializer, method)
    serializer = handler.response_serializer

    if handler.unary_unary:
        inner_uu = handler.unary_unary

        async def unary_unary(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await inner_uu(decode(raw), context)
            except ControlPlaneError as exc:
                await context.abort(_status_of(exc), str(exc))

        return grpc.unary_unary_rpc_method_handler(unary_unary, response_serializer=serializer)

    if handler.stream_stream:
        inner_ss = handler.stream_stream

        async def decoded(raw_iter: AsyncIterator[bytes]) -> AsyncIterator[Any]:
            async for raw in raw_iter:
                yield decode(raw)

        async def stream_stream(raw_iter: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                async for response in inner_ss(decoded(raw_iter), context):
                    yield response
            except ControlPlaneError as exc:
                await context.abort(_status_of(exc), str(exc))

        return grpc.stream_stream_rpc_method_handler(stream_stream, response_serializer=serializer)
    return handler  # no unary-stream / stream-unary methods of ours


def authorized_unary(handler: grpc.RpcMethodHandler, method: str, roles: frozenset[str],
                     authenticator: Authenticator) -> grpc.RpcMethodHandler:
    """A unary handler that checks the caller's role itself, then decodes and maps errors as
    :func:`_guarded` does: the guard without an interceptor, for a server that serves one hot method
    (route workers), where the interceptor's per-call coroutine and handler lookup cost more than Route's
    own bookkeeping."""
    if not handler.unary_unary:
        raise ValueError(f"{method} is not unary-unary")
    decode = _decoder(handler.request_deserializer, method)
    inner = handler.unary_unary
    service = method.rsplit("/", 2)[1]

    async def unary_unary(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        role = authenticator.role(bearer_token(context.invocation_metadata()))
        if role is None:
            await context.abort(Unauthenticated.code, "missing or invalid bearer token")
        if role not in roles:
            await context.abort(PermissionDenied.code, f"a {role} credential cannot call {service}")
        try:
            return await inner(decode(raw), context)
        except ControlPlaneError as exc:
            await context.abort(_status_of(exc), str(exc))

    return grpc.unary_unary_rpc_method_handler(unary_unary, response_serializer=handler.response_serializer)


def router_handlers(dispatcher: Dispatcher, authenticator: Authenticator) -> grpc.GenericRpcHandler:
    """``Router`` with its guard built in (see :func:`authorized_unary`)."""
    service = RouterService(dispatcher)
    handler = grpc.unary_unary_rpc_method_handler(
        service.Route, request_deserializer=router_pb2.RouteRequest.FromString,
        response_serializer=router_pb2.RouteResponse.SerializeToString)
    method = f"/{ROUTER_SERVICE}/Route"
    return grpc.method_handlers_generic_handler(ROUTER_SERVICE, {
        "Route": authorized_unary(handler, method, SERVICE_ROLES[ROUTER_SERVICE], authenticator)})


class GuardInterceptor(grpc.aio.ServerInterceptor):
    """Authentication per service, safe decoding, domain error → status code, shutdown refusal."""

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator
        self.shutting_down = False
        self._guarded: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method or ""
        service = method.rsplit("/", 2)[1] if method.count("/") >= 2 else ""
        handler = await continuation(handler_call_details)
        if service in OPEN_SERVICES or handler is None:
            return handler
        roles = SERVICE_ROLES.get(service)
        if roles is None:
            return _refusing(handler, grpc.StatusCode.PERMISSION_DENIED, "service is not exposed")
        role = self.authenticator.role(bearer_token(handler_call_details.invocation_metadata))
        if role is None:
            return _refusing(handler, Unauthenticated.code, "missing or invalid bearer token")
        if role not in roles:
            return _refusing(handler, PermissionDenied.code, f"a {role} credential cannot call {service}")
        if self.shutting_down:
            return _refusing(handler, ShuttingDown.code, "control plane is shutting down")
        guarded = self._guarded.get(method)
        if guarded is None:  # wrapped once per method: this path runs for every call
            guarded = self._guarded[method] = _guarded(handler, method)
        return guarded


# ---------------------------------------------------------------------------------- services


def command_message(action: str, deadline: float = 0.0) -> registry_pb2.ControlMessage:
    cmd = registry_pb2.Command(command_id=secrets.token_hex(8))
    if action == "cordon":
        cmd.cordon.SetInParent()
    elif action == "uncordon":
        cmd.uncordon.SetInParent()
    elif action == "drain":
        cmd.drain.deadline = deadline
    else:
        raise ValueError(f"unknown command {action!r}")
    return registry_pb2.ControlMessage(command=cmd)


class EdgeRegistryService(registry_pb2_grpc.EdgeRegistryServicer):
    """One ``Connect`` stream per edge."""

    def __init__(self, registry: Registry, settings: RegistrySettings, public_key_pem: str) -> None:
        self.registry = registry
        self.settings = settings
        self.public_key_pem = public_key_pem
        self._streams: set[EdgeStream] = set()

    def close_all(self) -> None:
        for stream in list(self._streams):
            stream.close()

    async def Connect(  # noqa: N802 - gRPC method name
        self, request_iterator: AsyncIterator[registry_pb2.EdgeMessage], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[registry_pb2.ControlMessage]:
        try:
            first = await asyncio.wait_for(anext(request_iterator), self.settings.register_timeout_s)
        except StopAsyncIteration:
            raise InvalidRequest("register", "stream ended before Register") from None
        except TimeoutError:
            raise InvalidRequest("register", f"no Register within {self.settings.register_timeout_s:g} s") from None
        if first.WhichOneof("body") != "register":
            raise InvalidRequest("register", "the first message must be Register")
        reg = convert.registration_from_pb(first.register)
        stream = EdgeStream(reg.instance_id)
        entry = await self.registry.register(reg, stream)
        edge_id = entry.edge_id
        structlog.contextvars.bind_contextvars(edge_id=edge_id, rpc="Connect")
        self._streams.add(stream)
        failure: list[BaseException] = []
        reader = asyncio.create_task(self._read(edge_id, stream, request_iterator, failure),
                                     name=f"edge-reader-{edge_id}")
        try:
            yield registry_pb2.ControlMessage(registered=registry_pb2.Registered(
                report_interval_s=self.settings.report_interval_s, ttl_s=self.settings.ttl_s,
                ticket_public_key_pem=self.public_key_pem, cordoned=entry.cordoned,
                drain_deadline=entry.drain_deadline,
            ))
            while True:
                message = await stream.outbox.get()
                if message is None:
                    break
                yield message  # type: ignore[misc]
            if failure:
                raise failure[0]
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self._streams.discard(stream)
            self.registry.disconnect(edge_id, stream)

    def _changes_state(self, edge_id: str, report: registry_pb2.LoadReport) -> bool:
        """Whether a report says more than "same as before": those are never throttled."""
        entry = self.registry.edges.get(edge_id)
        return (entry is None or report.drained or bool(report.new_sessions)
                or report.load.accepting != entry.load.accepting
                or len(report.load.session_ids) != len(entry.sessions))

    async def _read(self, edge_id: str, stream: EdgeStream,
                    request_iterator: AsyncIterator[registry_pb2.EdgeMessage],
                    failure: list[BaseException]) -> None:
        last_applied = 0.0
        try:
            async for message in request_iterator:
                kind = message.WhichOneof("body")
                if kind == "load":
                    now = time.monotonic()
                    if (now - last_applied < self.settings.min_report_spacing_s
                            and not self._changes_state(edge_id, message.load)):
                        continue
                    last_applied = now
                    report = message.load
                    self.registry.report(
                        edge_id, stream, convert.load_from_pb(report.load),
                        [convert.session_from_pb(s) for s in report.new_sessions], report.drained,
                    )
                elif kind == "ack":
                    log.info("edge acknowledged command", edge_id=edge_id, command_id=message.ack.command_id,
                             ok=message.ack.ok, message=message.ack.message)
                elif kind == "register":
                    raise InvalidRequest("register", "this stream is already registered")
                else:
                    raise InvalidRequest("body", "empty EdgeMessage")
        except ControlPlaneError as exc:
            failure.append(exc)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            log.info("edge stream read ended", edge_id=edge_id, error=str(exc))
        finally:
            stream.close()


class RouterService(router_pb2_grpc.RouterServicer):
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    async def Route(  # noqa: N802
        self, request: router_pb2.RouteRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.RouteResponse:
        result = self.dispatcher.route(convert.route_query_from_pb(request))
        return convert.route_result_to_pb(result)


class FleetAdminService(fleet_pb2_grpc.FleetAdminServicer):
    def __init__(self, registry: Registry, store: Store, dispatcher: Dispatcher, settings: RegistrySettings) -> None:
        self.registry = registry
        self.store = store
        self.dispatcher = dispatcher
        self.settings = settings
        self.started_mono = time.monotonic()

    async def ListEdges(self, request: fleet_pb2.ListEdgesRequest, context: grpc.aio.ServicerContext  # noqa: N802
                        ) -> fleet_pb2.ListEdgesResponse:
        return fleet_pb2.ListEdgesResponse(edges=[convert.edge_to_pb(e) for e in self.registry.list_edges(request.region)])

    async def GetEdge(self, request: fleet_pb2.GetEdgeRequest, context: grpc.aio.ServicerContext  # noqa: N802
                      ) -> edge_pb2.Edge:
        return convert.edge_to_pb(self.registry.get(request.edge_id))

    async def CordonEdge(self, request: fleet_pb2.EdgeRequest, context: grpc.aio.ServicerContext  # noqa: N802
                         ) -> edge_pb2.Edge:
        entry = await self.registry.cordon(request.edge_id, command_message("cordon"))
        return convert.edge_to_pb(entry)

    async def UncordonEdge(self, request: fleet_pb2.EdgeRequest, context: grpc.aio.ServicerContext  # noqa: N802
                           ) -> edge_pb2.Edge:
        entry = await self.registry.uncordon(request.edge_id, command_message("uncordon"))
        return convert.edge_to_pb(entry)

    async def DrainEdge(self, request: fleet_pb2.DrainEdgeRequest, context: grpc.aio.ServicerContext  # noqa: N802
                        ) -> edge_pb2.Edge:
        timeout_s = request.timeout_s or self.settings.drain_default_timeout_s
        if not (0 < timeout_s <= 7 * 86400):
            raise InvalidRequest("timeout_s", "must be 0 (default) or up to 7 days")
        deadline = time.time() + timeout_s
        entry = await self.registry.drain(request.edge_id, deadline, command_message("drain", deadline))
        return convert.edge_to_pb(entry)

    async def ListSessions(self, request: fleet_pb2.ListSessionsRequest,  # noqa: N802
                           context: grpc.aio.ServicerContext) -> fleet_pb2.ListSessionsResponse:
        if request.state and request.state not in SESSION_STATES:
            raise InvalidRequest("state", f"must be one of {', '.join(SESSION_STATES)}")
        if request.edge_id and request.edge_id not in self.registry.edges:
            self.registry.get(request.edge_id)  # raises UnknownEdge
        states: tuple[str, ...] = (request.state,) if request.state else ("routed", "active")
        limit = min(request.limit or 1000, MAX_LIST_SESSIONS)
        rows = await self.store.list_sessions(request.edge_id, states, limit)
        return fleet_pb2.ListSessionsResponse(sessions=[convert.session_row_to_pb(r) for r in rows])

    async def GetStats(self, request: fleet_pb2.GetStatsRequest, context: grpc.aio.ServicerContext  # noqa: N802
                       ) -> fleet_pb2.Stats:
        stats = fleet_pb2.Stats(uptime_s=time.monotonic() - self.started_mono)
        regions: dict[str, fleet_pb2.RegionStats] = {}
        for e in self.registry.edges.values():
            r = regions.setdefault(e.region, fleet_pb2.RegionStats(region=e.region))
            serving = e.state.value == "serving"
            sessions = len(e.sessions)
            for target in (r, stats):
                target.edges += 1
                target.serving += int(serving)
                target.capacity += e.capacity if e.connected else 0
                target.sessions += sessions
            stats.pending += len(e.pending)
        c = self.dispatcher.counters
        stats.routes_total, stats.routes_exhausted, stats.routes_on_device = c.total, c.exhausted, c.on_device
        stats.regions.extend(regions[k] for k in sorted(regions))
        return stats


def service_names() -> Sequence[str]:
    """Full names of our services (for health and reflection)."""
    return (
        registry_pb2.DESCRIPTOR.services_by_name["EdgeRegistry"].full_name,
        router_pb2.DESCRIPTOR.services_by_name["Router"].full_name,
        fleet_pb2.DESCRIPTOR.services_by_name["FleetAdmin"].full_name,
        "seminote.v1.Progress",  # result sync (issue 5): control_plane.progress_service
    )
