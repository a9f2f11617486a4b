"""Edge node settings (pydantic-settings, environment prefix ``SEMINOTE_EDGE_``).

One :class:`EdgeSettings` is built in ``__main__`` and passed down as typed sub-models; library code
never reads the environment. An env file (``--env-file``, default none) is read for systemd.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Mode = Literal["light", "detailed"]


class AnalysisSettings(BaseModel):
    """Knobs of the streaming pipeline. Defaults are the tuned values; see README."""

    default_mode: Mode = "light"
    pitch_events_every_chunks: int = Field(1, ge=1, description="emit a pitch event every N chunks while voiced")
    dynamics_interval_s: float = Field(0.1, gt=0, description="period of dynamics events")
    tempo_interval_s: float = Field(1.0, gt=0, description="period of tempo events once a tempo is known")
    model_path: Path | None = Field(None, description="ONNX transcription model for detailed mode")
    pieces_dir: Path | None = Field(
        None, description="reference pieces (<id>.mid/.musicxml/.mxl) that tickets and set_piece name by id"
    )


class ServerSettings(BaseModel):
    """The live-session daemon (``seminote-edge serve``): HTTP, admission, tickets, limits, timeouts.

    Environment: ``SEMINOTE_EDGE_SERVER__<FIELD>``, e.g. ``SEMINOTE_EDGE_SERVER__PORT=8080``.
    """

    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0 for every interface)")
    port: int = Field(8080, ge=0, le=65535, description="HTTP port (0: any free port)")
    public_url: str | None = Field(None, description="base URL clients reach this edge at (absolute Location)")
    max_sessions: int = Field(64, ge=1, description="concurrent practice sessions of the edge (all workers); more get 503")
    workers: int = Field(
        0, ge=0, le=256, description="worker processes behind the one port (0: one per core; 1: a single process)"
    )
    retry_after_s: int = Field(5, ge=1, description="Retry-After sent with 503 when full or draining")
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="largest accepted request body (SDP offer)")
    ticket_public_key: str | None = Field(
        None, description="PEM text or path of the Ed25519 key that verifies session tickets"
    )
    ticket_private_key: str | None = Field(
        None, description="PEM text or path of the signing key (standalone edge: `ticket`, dev tickets)"
    )
    replay_guard_max_entries: int = Field(100_000, ge=1, description="unexpired ticket ids remembered")
    dev_tickets: bool = Field(
        False, description="serve POST /v1/dev/ticket to loopback clients (local development only)"
    )
    dev_ticket_ttl_s: float = Field(300.0, gt=0, description="lifetime of tickets minted by /v1/dev/ticket")
    dc_max_message_bytes: int = Field(4096, ge=64, description="largest control message accepted")
    dc_rate_per_s: float = Field(20.0, gt=0, description="sustained control messages per second")
    dc_burst: int = Field(40, ge=1, description="control messages accepted in a burst")
    dc_max_dropped: int = Field(500, ge=1, description="dropped control messages before the session ends")
    dc_max_buffered_bytes: int = Field(
        1 << 20, ge=4096, description="unsent feedback allowed to queue for a slow client before it is ended"
    )
    start_timeout_s: float = Field(10.0, gt=0, description="answer to first audio packet, at most")
    media_timeout_s: float = Field(5.0, gt=0, description="silence on the wire (no RTP) that ends a session")
    max_session_s: float = Field(4 * 3600.0, gt=0, description="hard cap on one session's length")
    watchdog_interval_s: float = Field(1.0, gt=0, description="how often sessions are checked for timeouts")
    overload_lag_ms: float = Field(
        500.0, ge=0, description="event-loop lag above which new sessions are refused (503); 0: never"
    )
    reorder_window_ms: float = Field(
        20.0, ge=0, description="how long an audio gap waits for a late packet before it is concealed"
    )
    receive_path: Literal["low_latency", "stock"] = Field(
        "low_latency",
        description="low_latency: decode each packet when it is next in order; stock: aiortc's jitter "
        "buffer and track (about 80 ms more; kept to measure against)",
    )
    shutdown_grace_s: float = Field(5.0, ge=0, description="time sessions get to say goodbye at shutdown")
    feedback_hold_ms: float = Field(
        40.0, ge=0, le=200, description="meter events (pitch, dynamics, tempo) may wait this long to share an SCTP "
        "packet with later ones; onsets, notes and every other event are never held",
    )


# --- result sync (issue 5: outbox → NATS JetStream) ------------------------------------------------
class SyncSettings(BaseModel):
    """Result sync: the SQLite outbox of session results and the relay that publishes it to JetStream.

    The outbox is bounded by ``outbox_max_rows``: when it is full, new note/score batches are refused
    (counted in ``seminote_outbox_dropped_results_total`` and in the session's local record) while
    summaries still fit in ``outbox_summary_reserve_rows`` extra rows. A warning (and the
    ``seminote_outbox_fill_ratio`` gauge) fires at ``outbox_warn_fill_ratio`` so operators act before.
    The relay runs as a child process of the edge at ``relay_niceness`` lower priority.
    """

    enabled: bool = Field(False, description="record results in the outbox and relay them to NATS")
    outbox_path: Path = Field(Path("seminote-outbox.db"), description="SQLite file of the outbox")
    outbox_max_rows: int = Field(200_000, ge=1, description="rows (batches) the outbox may hold")
    outbox_summary_reserve_rows: int = Field(1_000, ge=0, description="extra rows kept for summaries")
    outbox_warn_fill_ratio: float = Field(0.8, gt=0, le=1, description="fill ratio that raises the alert")
    batch_max_results: int = Field(64, ge=1, le=1_000, description="note/score events per outbox row")
    flush_interval_ms: float = Field(250.0, gt=0, description="longest time a result waits in memory")
    nats_urls: list[str] = Field(default_factory=lambda: ["nats://127.0.0.1:4222"])
    subject_prefix: str = Field("seminote.results", description="subject = <prefix>.<edge_id>.<kind>")
    stream_name: str = Field("SEMINOTE_RESULTS", description="stream the relay expects to store results")
    relay_read_rows: int = Field(512, ge=1, description="outbox rows read per relay round")
    publish_window: int = Field(64, ge=1, description="rows in flight at once (at most one per session)")
    relay_max_rows_per_s: float = Field(
        1000.0, ge=0, description="catch-up pace, so edges catching up at once do not flood NATS (0: no limit)"
    )
    relay_niceness: int = Field(
        19, ge=0, le=19, description="how much lower the relay process's CPU priority is than the edge's (nice)"
    )
    publish_timeout_s: float = Field(2.0, gt=0, description="wait for one JetStream publish ack")
    backoff_initial_s: float = Field(0.1, gt=0, description="first retry delay while NATS is away")
    backoff_max_s: float = Field(5.0, gt=0, description="longest retry delay while NATS is away")
# --- end result sync -------------------------------------------------------------------------------


# --- control-plane agent (issue 4: registry stream to the control plane) ---------------------------
class ControlAgentSettings(BaseModel):
    """The edge's control-plane agent (``edge_node.agent``): one Connect stream that registers the
    edge, reports load and takes cordon/uncordon/drain commands. Off unless ``addr`` is set.

    Environment: ``SEMINOTE_EDGE_CONTROL__<FIELD>``, e.g. ``SEMINOTE_EDGE_CONTROL__ADDR=127.0.0.1:50051``.
    """

    addr: str | None = Field(None, description="control plane gRPC address host:port; unset: standalone edge")
    enrollment_token: str | None = Field(None, description="shared secret that admits this edge to the registry")
    region: str = Field("local", description="region name used for routing")
    lat: float = Field(0.0, ge=-90, le=90, description="latitude of the edge's data centre")
    lon: float = Field(0.0, ge=-180, le=180, description="longitude of the edge's data centre")
    whip_url: str | None = Field(None, description="public WHIP URL; default: server.public_url + /v1/whip")
    capacity: int | None = Field(None, ge=1, description="sessions offered to the router; default server.max_sessions")
    tls_ca_path: Path | None = Field(None, description="CA that signs the control plane's certificate (TLS)")
    tls_cert_path: Path | None = Field(None, description="client certificate (mTLS)")
    tls_key_path: Path | None = Field(None, description="client key (mTLS)")
    backoff_initial_s: float = Field(0.2, gt=0, description="first re-register delay after losing the stream")
    backoff_max_s: float = Field(3.0, gt=0, description="longest re-register delay (full jitter below it)")
    register_timeout_s: float = Field(5.0, gt=0, description="wait for the Registered reply, at most")
    keepalive_s: float = Field(10.0, gt=0, description="HTTP/2 ping period that notices a dead link")
# --- end control-plane agent -----------------------------------------------------------------------


# --- service lifecycle (issue 8: systemd, graceful stop) -------------------------------------------
class ServiceSettings(BaseModel):
    """How ``seminote-edge serve`` stops: on SIGTERM it takes no new sessions (``/readyz`` 503), tells
    the control plane, lets open sessions finish for up to ``drain_timeout_s``, ends the rest, flushes
    the outbox and exits 0. A second SIGTERM/SIGINT cuts the wait short.

    Environment: ``SEMINOTE_EDGE_SERVICE__<FIELD>``, e.g. ``SEMINOTE_EDGE_SERVICE__DRAIN_TIMEOUT_S=300``.
    """

    drain_timeout_s: float = Field(
        300.0, ge=0, description="after SIGTERM, how long open sessions may run on before they are ended"
    )
# --- end service lifecycle -------------------------------------------------------------------------


class EdgeSettings(BaseSettings):
    """All settings of one edge process."""

    model_config = SettingsConfigDict(
        env_prefix="SEMINOTE_EDGE_", env_nested_delimiter="__", extra="ignore"
    )

    edge_id: str = "edge-local"
    analysis: AnalysisSettings = AnalysisSettings()
    sync: SyncSettings = SyncSettings()  # result sync (issue 5)
    server: ServerSettings = ServerSettings()
    control: ControlAgentSettings = ControlAgentSettings()  # control-plane agent (issue 4)
    service: ServiceSettings = ServiceSettings()  # service lifecycle under systemd (issue 8)
