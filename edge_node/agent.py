"""The edge's control-plane agent: one bidirectional ``Connect`` stream to the control plane.

It registers the edge (id, region, location, public WHIP URL, capacity, capabilities and the sessions
it serves right now), reports load every ``report_interval_s`` given by the control plane's reply,
and obeys commands pushed down the stream (cordon, uncordon, drain with a deadline). When the control
plane goes away it re-registers with exponential backoff and full jitter, while the edge keeps
serving its sessions: the agent is never on the media path.

The agent talks to the edge through :class:`AgentHost` (sessions, admission, drain), so the same agent
runs inside ``seminote-edge serve`` (:class:`SessionManagerHost`) and in fleet tests and benchmarks
(:class:`MemoryHost`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from control_plane._proto.seminote.v1 import edge_pb2, registry_pb2, registry_pb2_grpc

from .inference.model import DEFAULT_MODEL_PATH
from .settings import ControlAgentSettings, EdgeSettings
from .tickets import load_public_key

log = structlog.get_logger(__name__)

AGENT_VERSION = "seminote-edge/0.1"
MIN_REPORT_INTERVAL_S = 0.1  # whatever the control plane asks, never report more often than this
REPORT_JITTER = 0.1  # each report interval is stretched or shrunk by up to this fraction
_MODE_TO_PB = {"light": edge_pb2.MODE_LIGHT, "detailed": edge_pb2.MODE_DETAILED}


@dataclass(frozen=True, slots=True)
class AgentSession:
    """One session as the control plane should know it."""

    session_id: str
    user: str = ""
    mode: str = "light"
    piece: str = ""
    started_at: float = 0.0  # Unix seconds


@dataclass(frozen=True, slots=True)
class EdgeIdentity:
    """What the edge registers as."""

    edge_id: str
    region: str
    lat: float
    lon: float
    whip_url: str
    capacity: int
    detailed_mode: bool = False
    model_loaded: bool = False
    features: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HostMetrics:
    cpu_percent: float = 0.0
    latency_p99_ms: float = 0.0
    outbox_depth: int = 0


class AgentHost(Protocol):
    """The edge as the agent sees it."""

    def agent_sessions(self) -> Sequence[AgentSession]: ...

    def agent_metrics(self) -> HostMetrics: ...

    @property
    def agent_accepting(self) -> bool: ...

    def set_accepting(self, accepting: bool) -> None: ...

    async def drain_sessions(self, deadline: float) -> None: ...


class MemoryHost:
    """An in-memory host: sessions are added and removed by the caller (tests, benchmarks, fleets)."""

    def __init__(self) -> None:
        self.sessions: dict[str, AgentSession] = {}
        self.accepting = True
        self.drain_deadline: float | None = None
        self.metrics = HostMetrics()

    def agent_sessions(self) -> Sequence[AgentSession]:
        return list(self.sessions.values())

    def agent_metrics(self) -> HostMetrics:
        return self.metrics

    @property
    def agent_accepting(self) -> bool:
        return self.accepting

    def set_accepting(self, accepting: bool) -> None:
        self.accepting = accepting

    async def drain_sessions(self, deadline: float) -> None:
        """Sessions end on their own (the caller removes them); whatever is left at the deadline is ended."""
        self.drain_deadline = deadline
        while True:
            if not self.sessions or time.time() >= deadline:
                break
            await asyncio.sleep(0.05)
        self.sessions.clear()


class ManagedSessions(Protocol):
    """What :class:`SessionManagerHost` needs of ``edge_node.sessions.SessionManager``."""

    sessions: dict[str, Any]

    @property
    def accepting(self) -> bool: ...

    def drain(self) -> None: ...

    def undrain(self) -> None: ...

    async def close_all(self, reason: str) -> None: ...


class SessionManagerHost:
    """Adapts ``edge_node.sessions.SessionManager`` to :class:`AgentHost`."""

    DRAIN_POLL_S = 0.2

    def __init__(self, manager: ManagedSessions, detailed_mode: bool = False) -> None:
        self.manager = manager
        self.detailed_mode = detailed_mode
        self._cpu_mark = (time.monotonic(), time.process_time())

    def agent_sessions(self) -> Sequence[AgentSession]:
        wall_now, mono_now = time.time(), time.monotonic()
        return [
            AgentSession(s.id, s.claims.user, str(s.pipeline.mode), s.piece or "",
                         wall_now - (mono_now - s.created_at))
            for s in list(self.manager.sessions.values())
        ]

    def agent_metrics(self) -> HostMetrics:
        mono, cpu = time.monotonic(), time.process_time()
        last_mono, last_cpu = self._cpu_mark
        self._cpu_mark = (mono, cpu)
        share = (cpu - last_cpu) / max(mono - last_mono, 1e-6) / (os.cpu_count() or 1)
        outbox = getattr(self.manager, "results", None)  # result sync (issue 5): rows not yet relayed
        return HostMetrics(cpu_percent=round(100.0 * min(share, 1.0), 1),
                           outbox_depth=int(outbox.rows) if outbox is not None else 0)

    @property
    def agent_accepting(self) -> bool:
        return self.manager.accepting

    def set_accepting(self, accepting: bool) -> None:
        if accepting:
            self.manager.undrain()
        else:
            self.manager.drain()

    async def drain_sessions(self, deadline: float) -> None:
        self.manager.drain()
        while True:
            if not self.manager.sessions or time.time() >= deadline:
                break
            await asyncio.sleep(self.DRAIN_POLL_S)
        if self.manager.sessions:
            await self.manager.close_all("drained")


@dataclass(slots=True)
class AgentStatus:
    registered: bool = False
    registrations: int = 0
    failures: int = 0
    last_error: str = ""
    report_interval_s: float = 2.0
    ttl_s: float = 5.0
    public_key_pem: str = ""
    cordoned: bool = False
    drain_deadline: float = 0.0
    commands: list[str] = field(default_factory=list)


class EdgeAgent:
    """Keeps the edge registered with the control plane. ``async with EdgeAgent(...)``."""

    def __init__(
        self,
        settings: ControlAgentSettings,
        identity: EdgeIdentity,
        host: AgentHost,
        on_public_key: Callable[[str], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not settings.addr:
            raise ValueError("ControlAgentSettings.addr is not set")
        self.settings = settings
        self.identity = identity
        self.host = host
        self.on_public_key = on_public_key
        self.instance_id = secrets.token_hex(8)
        self.status = AgentStatus()
        self.registered = asyncio.Event()
        self._rng = rng or random.Random()
        self._task: asyncio.Task[None] | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._report_now = asyncio.Event()  # service lifecycle (issue 8): report before the interval
        self._reported: set[str] = set()
        self._closed = False
        self._log = log.bind(edge_id=identity.edge_id)

    async def __aenter__(self) -> EdgeAgent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        if self._closed:
            raise RuntimeError("EdgeAgent is closed; make a new one")
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"control-agent-{self.identity.edge_id}")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in (self._task, self._drain_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # ------------------------------------------------------------------ connection loop

    def _channel(self) -> grpc.aio.Channel:
        s = self.settings
        keepalive_ms = int(s.keepalive_s * 1000)
        options = [
            ("grpc.keepalive_time_ms", keepalive_ms),
            ("grpc.keepalive_timeout_ms", max(1000, keepalive_ms // 2)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.initial_reconnect_backoff_ms", 200),
        ]
        assert s.addr is not None
        if s.tls_ca_path is None and s.tls_cert_path is None:
            return grpc.aio.insecure_channel(s.addr, options=options)
        ca = s.tls_ca_path.read_bytes() if s.tls_ca_path else None
        key = s.tls_key_path.read_bytes() if s.tls_key_path else None
        cert = s.tls_cert_path.read_bytes() if s.tls_cert_path else None
        creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
        return grpc.aio.secure_channel(s.addr, creds, options=options)

    def backoff_s(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, initial * 2^attempt)]."""
        cap = min(self.settings.backoff_max_s, self.settings.backoff_initial_s * (2 ** min(attempt, 30)))
        return self._rng.uniform(0.0, cap)

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                await self._session()
                attempt = 0  # a stream that registered and then ended starts the backoff afresh
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                self.status.failures += 1
                self.status.last_error = f"{exc.code().name}: {exc.details()}"
                if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
                                  grpc.StatusCode.INVALID_ARGUMENT):
                    self._log.error("control plane refused this edge", code=exc.code().name, details=exc.details())
                else:  # the first failure in a row is news; the retries while it stays away are not
                    (self._log.warning if attempt == 0 else self._log.debug)(
                        "control plane stream ended", code=exc.code().name, details=exc.details(), attempt=attempt)
            except (TimeoutError, OSError, ConnectionError, asyncio.InvalidStateError) as exc:
                # InvalidStateError: a load report written as the control plane closed the stream
                self.status.failures += 1
                self.status.last_error = repr(exc)
                (self._log.warning if attempt == 0 else self._log.debug)(
                    "control plane unreachable", error=repr(exc), attempt=attempt)
            finally:
                if self.status.registered:
                    self.status.registered = False
                    self.registered.clear()
            delay = self.backoff_s(attempt)
            attempt += 1
            await asyncio.sleep(delay)

    def _register_message(self) -> registry_pb2.EdgeMessage:
        i = self.identity
        sessions = self.host.agent_sessions()
        self._reported = {s.session_id for s in sessions}
        return registry_pb2.EdgeMessage(register=registry_pb2.Register(
            edge_id=i.edge_id, region=i.region, lat=i.lat, lon=i.lon, whip_url=i.whip_url, capacity=i.capacity,
            capabilities=edge_pb2.Capabilities(detailed_mode=i.detailed_mode, model_loaded=i.model_loaded,
                                               features=list(i.features)),
            sessions=[_session_pb(s) for s in sessions], instance_id=self.instance_id, version=AGENT_VERSION,
            cordoned=self.status.cordoned,
        ))

    def load_message(self) -> registry_pb2.EdgeMessage:
        sessions = self.host.agent_sessions()
        ids = {s.session_id for s in sessions}
        new = [s for s in sessions if s.session_id not in self._reported]
        self._reported = ids
        metrics = self.host.agent_metrics()
        load = edge_pb2.Load(
            sessions_light=sum(1 for s in sessions if s.mode != "detailed"),
            sessions_detailed=sum(1 for s in sessions if s.mode == "detailed"),
            cpu_percent=metrics.cpu_percent, latency_p99_ms=metrics.latency_p99_ms,
            outbox_depth=metrics.outbox_depth, session_ids=sorted(ids),
            accepting=self.host.agent_accepting and not self.status.cordoned,
        )
        drained = bool(self.status.drain_deadline) and not sessions
        return registry_pb2.EdgeMessage(load=registry_pb2.LoadReport(
            load=load, new_sessions=[_session_pb(s) for s in new], drained=drained))

    async def _session(self) -> None:
        """One stream: register, then report and obey commands until it breaks."""
        metadata = (("authorization", f"Bearer {self.settings.enrollment_token or ''}"),)
        async with self._channel() as channel:
            stub = registry_pb2_grpc.EdgeRegistryStub(channel)
            call = stub.Connect(metadata=metadata)
            write_lock = asyncio.Lock()

            async def write(message: registry_pb2.EdgeMessage) -> None:
                async with write_lock:
                    await call.write(message)

            try:
                await asyncio.wait_for(write(self._register_message()), self.settings.register_timeout_s)
                first = await asyncio.wait_for(call.read(), self.settings.register_timeout_s)
                if first is grpc.aio.EOF or first.WhichOneof("body") != "registered":
                    await call.code()  # raises nothing; fall through to a clear error
                    raise ConnectionError("control plane closed the stream without Registered")
                self._apply_registered(first.registered)
                edge_id = self.identity.edge_id
                loops = {
                    asyncio.create_task(self._report_loop(write), name=f"agent-report-{edge_id}"),
                    asyncio.create_task(self._command_loop(call, write), name=f"agent-commands-{edge_id}"),
                }
                try:
                    done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        task.result()  # the first failure ends this stream
                finally:
                    for task in loops:
                        task.cancel()
                    for task in loops:
                        # a write racing the stream's end raises InvalidStateError ("RPC already finished")
                        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError, ConnectionError,
                                                 asyncio.InvalidStateError):
                            await task
            finally:
                call.cancel()

    def _apply_registered(self, reply: registry_pb2.Registered) -> None:
        st = self.status
        st.registered = True
        st.registrations += 1
        st.report_interval_s = max(MIN_REPORT_INTERVAL_S, reply.report_interval_s or st.report_interval_s)
        st.ttl_s = reply.ttl_s or st.ttl_s
        if reply.ticket_public_key_pem and reply.ticket_public_key_pem != st.public_key_pem:
            st.public_key_pem = reply.ticket_public_key_pem
            if self.on_public_key is not None:
                self.on_public_key(reply.ticket_public_key_pem)
        if reply.cordoned and not st.cordoned:
            self._cordon(True)
        if reply.drain_deadline and not st.drain_deadline:
            self._start_drain(reply.drain_deadline)
        self.registered.set()
        self._log.info("registered with control plane", interval_s=st.report_interval_s, ttl_s=st.ttl_s,
                       registrations=st.registrations, cordoned=st.cordoned)

    async def _report_loop(self, write: Callable[[registry_pb2.EdgeMessage], object]) -> None:
        """Reports every interval ± REPORT_JITTER, the first at a random point of the first interval
        (edges that registered together must not report in lockstep bursts), or at once when asked."""
        delay = self.status.report_interval_s * self._rng.uniform(0.1, 1.0)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._report_now.wait(), delay)
            self._report_now.clear()
            await write(self.load_message())  # type: ignore[misc]
            delay = self.status.report_interval_s * self._rng.uniform(1.0 - REPORT_JITTER, 1.0 + REPORT_JITTER)

    async def _command_loop(self, call: grpc.aio.StreamStreamCall,
                            write: Callable[[registry_pb2.EdgeMessage], object]) -> None:
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                code = await call.code()
                raise ConnectionError(f"control plane ended the stream ({code.name})")
            if message.WhichOneof("body") != "command":
                continue
            cmd = message.command
            action = cmd.WhichOneof("action") or ""
            ok, detail = True, ""
            if action == "cordon":
                self._cordon(True)
            elif action == "uncordon":
                self._cordon(False)
                self.status.drain_deadline = 0.0
            elif action == "drain":
                self._start_drain(cmd.drain.deadline)
            else:
                ok, detail = False, f"unknown command {action!r}"
            self.status.commands.append(action)
            self._log.info("control plane command", action=action, command_id=cmd.command_id)
            await write(registry_pb2.EdgeMessage(  # type: ignore[misc]
                ack=registry_pb2.CommandAck(command_id=cmd.command_id, ok=ok, message=detail)))
            await write(self.load_message())  # type: ignore[misc]  # state change visible at once

    # --- service lifecycle (issue 8): the edge itself is stopping (SIGTERM) --------------------------
    def announce_drain(self, deadline: float) -> None:
        """The edge is stopping on its own: stop admitting and report ``accepting=False`` (and, once
        empty, ``drained``) to the control plane now, not at the next report. ``deadline``: Unix seconds.
        The caller waits for the sessions itself, so no drain task is started here."""
        self._cordon(True)
        self.status.drain_deadline = deadline
        self._report_now.set()
    # --- end service lifecycle --------------------------------------------------------------------

    def _cordon(self, cordoned: bool) -> None:
        self.status.cordoned = cordoned
        self.host.set_accepting(not cordoned)

    def _start_drain(self, deadline: float) -> None:
        self._cordon(True)
        self.status.drain_deadline = deadline
        if self._drain_task is None or self._drain_task.done():
            self._drain_task = asyncio.create_task(self.host.drain_sessions(deadline),
                                                   name=f"agent-drain-{self.identity.edge_id}")


def _session_pb(s: AgentSession) -> edge_pb2.SessionInfo:
    return edge_pb2.SessionInfo(session_id=s.session_id, user=s.user, mode=_MODE_TO_PB.get(s.mode, edge_pb2.MODE_UNSPECIFIED),
                                piece=s.piece, started_at=s.started_at)


def edge_identity(settings: EdgeSettings, base_url: str) -> EdgeIdentity:
    """What ``seminote-edge serve`` registers as. ``capacity``: ``control.capacity``, else
    ``server.max_sessions`` — the whole edge's limit, whatever the number of worker processes."""
    c = settings.control
    base = (settings.server.public_url or base_url).rstrip("/")
    model_path = settings.analysis.model_path or DEFAULT_MODEL_PATH
    return EdgeIdentity(
        edge_id=settings.edge_id, region=c.region, lat=c.lat, lon=c.lon, whip_url=c.whip_url or f"{base}/v1/whip",
        capacity=c.capacity or settings.server.max_sessions, detailed_mode=True,
        model_loaded=Path(model_path).is_file(), features=("whip", "feedback-v1"),
    )


def agent_for_server(settings: EdgeSettings, manager: ManagedSessions, base_url: str) -> EdgeAgent | None:
    """The agent for ``seminote-edge serve``, or None for a standalone edge (no ``control.addr``).

    The control plane's ticket key, received on register, is added to the manager's trusted keys
    (replacing the one from an earlier registration, so a control plane that rotated its key is followed).
    """
    if not settings.control.addr:
        return None
    identity = edge_identity(settings, base_url)
    keys: list[Any] = manager.public_keys  # type: ignore[attr-defined]
    current: list[Ed25519PublicKey] = []

    def trust(pem: str) -> None:
        key = load_public_key(pem)
        for old in current:
            if old in keys:
                keys.remove(old)
        current[:] = [key]
        keys.append(key)

    return EdgeAgent(settings.control, identity, SessionManagerHost(manager), on_public_key=trust)
