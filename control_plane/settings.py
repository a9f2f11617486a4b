"""Control-plane settings (pydantic-settings, environment prefix ``SEMINOTE_CONTROL_``).

One :class:`ControlSettings` is built in ``__main__`` and passed down as typed sub-models; library code
never reads the environment. Nested fields use ``__``: ``SEMINOTE_CONTROL_GRPC__PORT=50051``. Token
lists take comma-separated values: ``SEMINOTE_CONTROL_AUTH__ADMIN_TOKENS=a,b``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

TokenList = Annotated[list[str], NoDecode]


def _split_tokens(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class GrpcSettings(BaseModel):
    """The gRPC listener. TLS when cert+key are set; mTLS (client certs required) when a client CA is set."""

    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535, description="0 picks a free port")
    max_message_bytes: int = Field(1 << 20, ge=1024, description="largest request accepted")
    shutdown_grace_s: float = Field(5.0, ge=0)
    tls_cert_path: Path | None = None
    tls_key_path: Path | None = None
    tls_client_ca_path: Path | None = Field(None, description="require client certificates signed by this CA")
    route_port: int | None = Field(None, ge=0, le=65535, description="Router served by routing.workers processes")


class GatewaySettings(BaseModel):
    """The JSON gateway for browsers (``POST /v1/route``)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8081, ge=0, le=65535)
    cors_origins: TokenList = Field(default_factory=lambda: ["*"])
    max_body_bytes: int = Field(16 * 1024, ge=256)

    _split = field_validator("cors_origins", mode="before")(_split_tokens)


class AuthSettings(BaseModel):
    """Shared secrets: edges enroll with an enrollment token, operators use an admin token, the route
    gateway and app clients a client API key. Every list must be non-empty to start."""

    enrollment_tokens: TokenList = Field(default_factory=list)
    admin_tokens: TokenList = Field(default_factory=list)
    client_api_keys: TokenList = Field(default_factory=list)

    _split = field_validator("enrollment_tokens", "admin_tokens", "client_api_keys", mode="before")(_split_tokens)


class RegistrySettings(BaseModel):
    """Edge liveness and housekeeping."""

    report_interval_s: float = Field(2.0, gt=0, description="edges report load this often")
    ttl_s: float = Field(5.0, gt=0, description="no report within this → out of routing")
    sweep_interval_s: float = Field(0.5, gt=0)
    remove_after_s: float = Field(600.0, gt=0, description="disconnected edges are forgotten after this")
    pending_ttl_s: float = Field(15.0, gt=0, description="a routed session not seen connected is dropped after this")
    drain_default_timeout_s: float = Field(300.0, gt=0)
    max_edges: int = Field(10_000, ge=1)
    max_sessions_per_report: int = Field(10_000, ge=1)
    register_timeout_s: float = Field(10.0, gt=0, description="a stream must send Register within this")
    min_report_spacing_s: float = Field(
        0.1, ge=0, description="a load report that changes nothing is applied at most this often per edge"
    )


class RoutingSettings(BaseModel):
    """Tempo thresholds and latency budgets of the routing policy (see control_plane.router)."""

    slow_bpm: float = Field(60.0, gt=0, description="below this: detailed mode")
    fast_bpm: float = Field(120.0, gt=0, description="above this: on-device, or light on a very near edge")
    fast_budget_ms: float = Field(25.0, gt=0, description="RTT budget for light mode at fast tempos")
    light_budget_ms: float = Field(80.0, gt=0, description="RTT budget for light mode")
    slow_budget_ms: float = Field(150.0, gt=0, description="RTT budget for detailed mode at slow tempos")
    tier_slack_ms: float = Field(5.0, ge=0, description="edges this close (RTT) to the nearest count as equally near")
    regions_scanned: int = Field(2, ge=1, description="nearest regions with routable edges considered")
    max_alternates: int = Field(2, ge=0, le=10)
    ticket_ttl_s: float = Field(120.0, gt=0, description="how long a routed client has to connect")
    workers: int = Field(0, ge=0, le=64, description="route worker processes on grpc.route_port (0: none)")
    replica_interval_s: float = Field(0.05, gt=0, description="how often workers get the fleet's load")


class TicketSettings(BaseModel):
    """The Ed25519 key that signs session tickets. Unset: one is made and kept in the state dir."""

    private_key_path: Path | None = None


# --- result sync (issue 5: JetStream → ingest → progress store) -----------------------------------
class ResultSyncSettings(BaseModel):
    """The results stream, its durable ingest consumer, and the progress store it writes.

    ``replicas``: 1 for a single local NATS, 3 for a cluster (``deploy/nats/``). The duplicate
    window only bounds JetStream's own dedup; the ingest's upsert by message id covers redelivery
    after it. Corrupt messages go to ``deadletter_subject`` (its own stream) with a reason.
    """

    enabled: bool = Field(False, description="run the ingest consumer in `seminote-control serve`")
    nats_urls: TokenList = Field(default_factory=lambda: ["nats://127.0.0.1:4222"])
    stream_name: str = "SEMINOTE_RESULTS"
    subject_prefix: str = Field("seminote.results", description="edges publish <prefix>.<edge_id>.<kind>")
    replicas: int = Field(1, ge=1, le=5, description="stream replicas: 1 local, 3 for a cluster")
    duplicate_window_s: float = Field(120.0, gt=0, description="JetStream's Nats-Msg-Id dedup window")
    max_age_s: float = Field(7 * 86400.0, gt=0, description="results kept in the stream this long")
    durable_name: str = Field("progress-ingest", description="durable pull consumer of the ingest")
    ack_wait_s: float = Field(30.0, gt=0, description="unacked messages are redelivered after this")
    fetch_batch: int = Field(256, ge=1, le=10_000, description="messages pulled per fetch")
    fetch_timeout_s: float = Field(1.0, gt=0, description="longest wait of one fetch on an idle stream")
    deadletter_stream: str = "SEMINOTE_DEADLETTER"
    deadletter_subject: str = "seminote.deadletter.results"
    max_message_bytes: int = Field(1 << 20, ge=1024, description="larger results are dead-lettered")
    progress_db_path: Path | None = Field(None, description="progress store file (default: state_dir)")
    backoff_max_s: float = Field(5.0, gt=0, description="longest retry delay while NATS is away")

    _split = field_validator("nats_urls", mode="before")(_split_tokens)
# --- end result sync -------------------------------------------------------------------------------


# --- service lifecycle (issue 8: metrics listener) -------------------------------------------------
class MetricsSettings(BaseModel):
    """Prometheus ``GET /metrics`` on its own listener (``control_plane.metrics``); off while ``port``
    is unset, so that tests and tools starting several control planes do not fight over a port."""

    host: str = Field("127.0.0.1", description="address of the metrics listener")
    port: int | None = Field(None, ge=0, le=65535, description="metrics port (e.g. 9464); unset: no listener")
# --- end service lifecycle -------------------------------------------------------------------------


class ControlSettings(BaseSettings):
    """All settings of one control-plane process."""

    model_config = SettingsConfigDict(env_prefix="SEMINOTE_CONTROL_", env_nested_delimiter="__", extra="ignore")

    state_dir: Path = Path(".seminote-control")
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    grpc: GrpcSettings = GrpcSettings()
    gateway: GatewaySettings = GatewaySettings()
    auth: AuthSettings = AuthSettings()
    registry: RegistrySettings = RegistrySettings()
    routing: RoutingSettings = RoutingSettings()
    tickets: TicketSettings = TicketSettings()
    sync: ResultSyncSettings = ResultSyncSettings()  # result sync (issue 5)
    metrics: MetricsSettings = MetricsSettings()  # Prometheus listener (issue 8)

    @property
    def db_path(self) -> Path:
        return self.state_dir / "control.db"

    @property
    def progress_db_path(self) -> Path:  # result sync (issue 5)
        return self.sync.progress_db_path or self.state_dir / "progress.db"
