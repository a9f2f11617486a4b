"""The control-plane process wired together: store → registry → dispatcher → gRPC server + JSON gateway.

Start order is the dependency order; shutdown is the reverse (stop taking new work, tell probes, end
edge streams, stop the gRPC server with a grace period, flush and close the store).
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from edge_node.errors import ConfigError as TicketKeyError
from edge_node.tickets import generate_keypair, load_private_key, private_key_pem, public_key_pem

from ._proto.seminote.v1 import fleet_pb2_grpc, progress_pb2_grpc, registry_pb2_grpc, router_pb2_grpc
from .dispatch import Dispatcher
from .errors import ConfigError
from .fleet_index import warm_up
from .gateway import Gateway
from .ingest import Ingest
from .progress_service import ProgressService
from .progress_store import ProgressStore
from .registry import Registry
from .server import (
    Authenticator,
    EdgeRegistryService,
    FleetAdminService,
    GuardInterceptor,
    RouterService,
    service_names,
)
from .settings import ControlSettings, GrpcSettings
from .store import Store
from .workers import WorkerPool

log = structlog.get_logger(__name__)

KEY_FILE_NAME = "ticket_signing_key.pem"
# Edges ping every 10 s; allow pings that often even without calls, so half-open links are noticed.
KEEPALIVE_MIN_PING_INTERVAL_MS = 5_000


def load_or_create_signing_key(settings: ControlSettings) -> Ed25519PrivateKey:
    """The ticket signing key from settings, or one kept (0600) in the state dir, made on first start."""
    try:
        if settings.tickets.private_key_path is not None:
            return load_private_key(settings.tickets.private_key_path)
        path = settings.state_dir / KEY_FILE_NAME
        if path.exists():
            return load_private_key(path)
    except TicketKeyError as exc:
        raise ConfigError("tickets.private_key_path", exc.reason) from exc
    private, _ = generate_keypair()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(private_key_pem(private))
    log.info("created ticket signing key", path=str(path))
    return private


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(setting, f"cannot read {path}: {exc.strerror or exc}") from exc


def server_credentials(g: GrpcSettings) -> grpc.ServerCredentials | None:
    """TLS when cert+key are set; client certificates required (mTLS) when a client CA is set too."""
    if g.tls_cert_path is None and g.tls_key_path is None:
        if g.tls_client_ca_path is not None:
            raise ConfigError("grpc.tls_client_ca_path", "mTLS needs grpc.tls_cert_path and grpc.tls_key_path")
        return None
    if g.tls_cert_path is None or g.tls_key_path is None:
        raise ConfigError("grpc.tls_cert_path", "set both grpc.tls_cert_path and grpc.tls_key_path")
    pair = [(_read(g.tls_key_path, "grpc.tls_key_path"), _read(g.tls_cert_path, "grpc.tls_cert_path"))]
    if g.tls_client_ca_path is None:
        return grpc.ssl_server_credentials(pair)
    ca = _read(g.tls_client_ca_path, "grpc.tls_client_ca_path")
    return grpc.ssl_server_credentials(pair, root_certificates=ca, require_client_auth=True)


class ControlPlane:
    """One control-plane process. ``async with ControlPlane(settings) as cp: await cp.wait()``."""

    def __init__(self, settings: ControlSettings) -> None:
        self.settings = settings
        self.port: int | None = None
        self.gateway_port: int | None = None
        self.store: Store | None = None
        self.registry: Registry | None = None
        self.dispatcher: Dispatcher | None = None
        self.gateway: Gateway | None = None
        self.workers: WorkerPool | None = None  # route workers (routing.workers > 0)
        self.route_port: int | None = None
        self.progress_store: ProgressStore | None = None  # result sync (issue 5)
        self.ingest: Ingest | None = None
        self.public_key_pem = ""
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._guard: GuardInterceptor | None = None
        self._registry_service: EdgeRegistryService | None = None
        self._started = False
        self._closed = False

    async def __aenter__(self) -> ControlPlane:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _check_auth(self) -> None:
        auth = self.settings.auth
        for name in ("enrollment_tokens", "admin_tokens", "client_api_keys"):
            tokens: list[str] = getattr(auth, name)
            if not tokens:
                raise ConfigError(f"auth.{name}", f"set SEMINOTE_CONTROL_AUTH__{name.upper()} (comma-separated)")
            if any(len(t) < 16 for t in tokens):
                raise ConfigError(f"auth.{name}", "tokens must be at least 16 characters")

    async def start(self) -> None:
        if self._closed:
            raise RuntimeError("ControlPlane is closed; make a new one")
        if self._started:
            return
        self._started = True
        s = self.settings
        self._check_auth()
        credentials = server_credentials(s.grpc)
        key = load_or_create_signing_key(s)
        self.public_key_pem = public_key_pem(key)
        self.store = Store(s.db_path)
        await self.store.start()
        self.registry = Registry(s.registry, self.store)
        await self.registry.start()
        self.dispatcher = Dispatcher(self.registry, self.store, s.routing, key)
        warm_up()  # the policy kernels compile (or load) here, not in the first Route
        authenticator = Authenticator(s.auth)
        self._guard = GuardInterceptor(authenticator)
        server = grpc.aio.server(interceptors=[self._guard], options=[
            ("grpc.max_receive_message_length", s.grpc.max_message_bytes),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", KEEPALIVE_MIN_PING_INTERVAL_MS),
            ("grpc.http2.max_ping_strikes", 0),
            ("grpc.so_reuseport", 0),
        ])
        self._registry_service = EdgeRegistryService(self.registry, s.registry, self.public_key_pem)
        registry_pb2_grpc.add_EdgeRegistryServicer_to_server(self._registry_service, server)
        router_pb2_grpc.add_RouterServicer_to_server(RouterService(self.dispatcher), server)
        fleet_pb2_grpc.add_FleetAdminServicer_to_server(
            FleetAdminService(self.registry, self.store, self.dispatcher, s.registry), server)
        # result sync (issue 5): progress queries always; the JetStream ingest when sync is enabled.
        self.progress_store = ProgressStore(s.progress_db_path)
        await self.progress_store.start()
        progress_pb2_grpc.add_ProgressServicer_to_server(ProgressService(self.progress_store), server)
        if s.sync.enabled:
            self.ingest = Ingest(s.sync, self.progress_store)
            await self.ingest.start()
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        names = list(service_names())
        reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        address = f"{s.grpc.host}:{s.grpc.port}"
        self.port = (server.add_secure_port(address, credentials) if credentials is not None
                     else server.add_insecure_port(address))
        if not self.port:
            raise ConfigError("grpc.port", f"cannot listen on {address}")
        await server.start()
        self._server = server
        for name in ("", *names):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if s.gateway.enabled:
            self.gateway = Gateway(s.gateway, self.dispatcher, authenticator)
            await self.gateway.start()
            self.gateway_port = self.gateway.port
        if s.routing.workers:
            if s.grpc.route_port is None:
                raise ConfigError("grpc.route_port", "routing.workers needs a port for them to serve Route on")
            self.workers = WorkerPool(s, private_key_pem(key), self.registry, self.store, self.dispatcher)
            await self.workers.start()
            self.route_port = self.workers.port
        log.info("control plane serving", grpc_port=self.port, gateway_port=self.gateway_port,
                 route_port=self.route_port,
                 tls=credentials is not None, mtls=s.grpc.tls_client_ca_path is not None)

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._guard is not None:
            self._guard.shutting_down = True
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self.gateway is not None:
            await self.gateway.aclose()
        if self.workers is not None:
            await self.workers.aclose()
        if self._registry_service is not None:
            self._registry_service.close_all()
        if self._server is not None:
            await self._server.stop(self.settings.grpc.shutdown_grace_s)
        if self.ingest is not None:  # result sync (issue 5)
            await self.ingest.aclose()
        if self.progress_store is not None:
            await self.progress_store.aclose()
        if self.registry is not None:
            await self.registry.aclose()
        if self.store is not None:
            await self.store.aclose()
        log.info("control plane stopped")
