"""All cores: one edge = a small front process + one worker process per core (``server.workers``).

Why this shape (README, "All cores"): a session's cost is its media — SRTP, Opus, analysis, SCTP —
and that runs in the worker that owns the session, on its own core, with UDP going straight between
the client and that worker's ICE sockets. Signaling is a handful of requests per session, so it can
afford one local hop through a front process, which buys what a shared ``SO_REUSEPORT`` socket
cannot give by itself: admission against the edge's *total* limit, placement on the least loaded
worker, the single-use ticket guard kept in one place, one control-plane agent reporting one edge
(summed capacity and load), one systemd ``Type=notify`` voice, and one ``/metrics`` summed over the
workers.

The front (:func:`serve_front`) listens on ``server.host:port``:

- ``POST /v1/whip``: ticket checked (signature, edge, expiry, not used before) and the edge's total
  admitted here; the offer is forwarded to the worker with the fewest sessions, its answer returned
  as is (``Location: /v1/sessions/{id}``); the session id is remembered with its worker.
- ``DELETE``/``PATCH /v1/sessions/{id}``: forwarded to the session's worker (404 when none has it).
- ``/healthz`` (front alive, workers listed), ``/readyz`` (admitting), ``/metrics`` (every worker's
  metrics summed — counters, histograms, sessions — plus ``seminote_edge_worker_*{worker=...}``).
- ``/``, ``/static/``, ``/v1/dev/ticket``: served by the front itself.

Workers (:mod:`edge_node.worker`) are polled every ``WORKER_POLL_S`` for their sessions, admission and
CPU. A worker that dies is logged and left out; the others keep serving. SIGTERM: the front stops
admitting, tells systemd and the control plane, and passes SIGTERM to every worker, which drains its
own sessions as a single-process edge does; the front exits 0 once all have exited 0 (a second
signal is passed on too, cutting the drains short). Result sync: workers write to the shared outbox
file; the front runs the one relay and flushes it after the workers are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, ProcessCollector, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from .agent import AgentSession, EdgeAgent, HostMetrics, edge_identity
from .errors import ConfigError, TicketError, TicketReplayed
from .lifecycle import EXTEND_MARGIN_S, EXTEND_PERIOD_S, service_status
from .metrics import CONTENT_TYPE_LATEST
from .relay_process import ResultSync
from .sdnotify import Notifier, NotifyConfig
from .settings import EdgeSettings
from .signaling import (
    SDP_TYPE,
    SETTINGS_KEY,
    SIGNER_KEY,
    _bearer,
    _error,
    _missing_ticket,
    _read_text,
    _ticket_error,
    add_public_routes,
    load_ticket_keys,
)
from .tickets import ReplayGuard, load_public_key, verify_ticket

log = structlog.get_logger(__name__)

WORKER_POLL_S = 0.5  # how often the front refreshes each worker's sessions and load
WORKER_POLL_TIMEOUT_S = 2.0
WORKER_STUCK_S = 20.0  # a worker whose loop has not answered this long is killed (systemd's WatchdogSec is 30 s)
WORKER_START_TIMEOUT_S = 300.0  # numba's cache may be cold on first start
WORKER_EXIT_GRACE_S = 15.0  # after a worker's own drain and teardown limits, before it is killed
FORWARD_TIMEOUT_S = 30.0
DRAIN_POLL_S = 0.1
STOP_MARGIN_S = 10.0
PASSED_HEADERS = ("Content-Type", "Location", "ETag", "Retry-After", "WWW-Authenticate", "X-Candidates-Added")
MAX_GAUGES = frozenset({"seminote_edge_event_loop_lag_seconds", "process_max_fds"})
FRONT_OWNED = frozenset({"seminote_edge_accepting", "seminote_edge_sessions_max"})
FRONT_KEY = web.AppKey("front", object)


def worker_count(settings: EdgeSettings) -> int:
    """``server.workers``, with 0 meaning one per core."""
    return settings.server.workers or os.cpu_count() or 1


class Worker:
    """One worker process as the front sees it."""

    def __init__(self, index: int, socket_path: str) -> None:
        self.index = index
        self.socket_path = socket_path
        self.proc: asyncio.subprocess.Process | None = None
        self.http: aiohttp.ClientSession | None = None  # clients' requests: a connection each, closed after
        self.control: aiohttp.ClientSession | None = None  # the front's own polls and scrapes: one connection
        self.status: dict[str, Any] = {"sessions": [], "count": 0, "accepting": False, "cpu_s": 0.0}
        self.pending = 0  # offers forwarded and not yet answered
        self.alive = False
        self.answered_at = time.monotonic()  # last status poll it answered

    @property
    def load(self) -> int:
        return int(self.status.get("count", 0)) + self.pending

    async def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                      body: bytes | None = None, json_body: Any = None) -> tuple[int, dict[str, str], bytes]:
        http = self.control if path.startswith(("/internal/", "/metrics")) else self.http
        assert http is not None
        async with http.request(method, f"http://worker{path}", headers=headers, data=body,
                                     json=json_body) as resp:
            data = await resp.read()
            return resp.status, {k: v for k, v in resp.headers.items() if k in PASSED_HEADERS}, data


class WorkerPool:
    """Spawns, polls and stops the workers; places sessions; remembers where each one lives."""

    def __init__(self, settings: EdgeSettings, count: int, log_format: str) -> None:
        self.settings = settings
        self.dir = tempfile.mkdtemp(prefix="seminote-edge-")
        self.workers = [Worker(i, os.path.join(self.dir, f"w{i}.sock")) for i in range(count)]
        self.log_format = log_format
        self.owner: dict[str, Worker] = {}
        self._poller: asyncio.Task[None] | None = None
        self._watchers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for w in self.workers:
            await self._spawn(w)
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        for w in self.workers:
            while not await self._poll(w):
                if w.proc is None or w.proc.returncode is not None:
                    raise ConfigError("server.workers", f"worker {w.index} exited while starting")
                if time.monotonic() > deadline:
                    raise ConfigError("server.workers", f"worker {w.index} did not start")
                await asyncio.sleep(0.1)
        self._poller = asyncio.create_task(self._poll_loop(), name="edge-workers-poll")

    async def _spawn(self, w: Worker) -> None:
        settings = self.settings.model_copy(update={"server": self.settings.server.model_copy(update={"workers": 1})})
        w.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edge_node.worker", "--index", str(w.index), "--socket", w.socket_path,
            "--log-format", self.log_format, stdin=asyncio.subprocess.PIPE,
        )
        assert w.proc.stdin is not None
        w.proc.stdin.write(settings.model_dump_json().encode())
        w.proc.stdin.close()
        # A worker's task count (a leak signal in its metrics) must not depend on how many idle
        # keep-alive connections the front happens to hold: clients' requests close theirs, the
        # front's own traffic shares one.
        w.http = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=w.socket_path, force_close=True),
                                       timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S))
        w.control = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=w.socket_path, limit=1),
                                          timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S))
        self._watchers.append(asyncio.create_task(self._watch(w), name=f"edge-worker-{w.index}-exit"))

    async def _watch(self, w: Worker) -> None:
        assert w.proc is not None
        code = await w.proc.wait()
        w.alive = False
        w.status = {"sessions": [], "count": 0, "accepting": False, "cpu_s": w.status.get("cpu_s", 0.0)}
        (log.info if code == 0 else log.error)("edge worker exited", worker=w.index, exit_code=code)

    async def _poll(self, w: Worker) -> bool:
        if w.proc is None or w.proc.returncode is not None:
            return False
        try:
            async with asyncio.timeout(WORKER_POLL_TIMEOUT_S):
                status, _, body = await w.request("GET", "/internal/status")
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False
        if status != 200:
            return False
        w.status = json.loads(body)
        w.alive = True
        w.answered_at = time.monotonic()
        for s in w.status["sessions"]:
            self.owner.setdefault(s["id"], w)
        return True

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(WORKER_POLL_S)
            await asyncio.gather(*(self._poll(w) for w in self.workers if w.alive))
            now = time.monotonic()
            for w in self.workers:
                # The front's own loop feeds systemd's watchdog; a worker's stuck loop is caught here.
                if w.alive and w.proc is not None and w.proc.returncode is None \
                        and now - w.answered_at > WORKER_STUCK_S:
                    log.error("edge worker stuck; killing it", worker=w.index, silent_s=round(now - w.answered_at, 1))
                    with contextlib.suppress(ProcessLookupError):
                        w.proc.kill()
            live = {s["id"] for w in self.workers for s in w.status["sessions"]}
            pending = any(w.pending for w in self.workers)
            for sid in [sid for sid in self.owner if sid not in live]:
                if not pending:  # an offer being answered may not show in the status yet
                    del self.owner[sid]

    # ----------------------------------------------------------------------------------- views
    @property
    def alive(self) -> list[Worker]:
        return [w for w in self.workers if w.alive]

    @property
    def count(self) -> int:
        return sum(int(w.status.get("count", 0)) for w in self.workers)

    def sessions(self) -> list[dict[str, Any]]:
        return [s for w in self.workers for s in w.status["sessions"]]

    def choose(self) -> Worker | None:
        candidates = [w for w in self.alive if w.status.get("accepting")]
        return min(candidates, key=lambda w: (w.load, w.index)) if candidates else None

    async def broadcast(self, path: str, body: Any) -> None:
        async def one(w: Worker) -> None:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                await w.request("POST", path, json_body=body)
        await asyncio.gather(*(one(w) for w in self.alive))

    def signal_all(self, sig: int) -> None:
        for w in self.workers:
            if w.proc is not None and w.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(sig)

    @property
    def running(self) -> bool:
        return any(w.proc is not None and w.proc.returncode is None for w in self.workers)

    async def aclose(self, grace_s: float) -> list[int | None]:
        """Wait for the workers to exit (killing those past ``grace_s``); returns their exit codes."""
        procs = [w.proc for w in self.workers if w.proc is not None]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                await asyncio.gather(*(p.wait() for p in procs))
        for p in procs:
            if p.returncode is None:
                log.error("edge worker did not stop; killing it", pid=p.pid)
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                await p.wait()
        if self._poller is not None:
            self._poller.cancel()
        await asyncio.gather(*self._watchers, *([self._poller] if self._poller else []), return_exceptions=True)
        for w in self.workers:
            for http in (w.http, w.control):
                if http is not None:
                    await http.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        return [p.returncode for p in procs]


class Front:
    """The front's state: the pool, admission, the ticket guard and the trusted keys."""

    def __init__(self, settings: EdgeSettings, pool: WorkerPool) -> None:
        self.settings = settings
        self.server = settings.server
        self.pool = pool
        self.public_keys: list[Any] = []
        self.guard = ReplayGuard(self.server.replay_guard_max_entries)
        self.in_flight: set[str] = set()
        self.draining = False
        self.cordoned = False
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry, namespace="seminote_edge_front")
        Gauge("seminote_edge_accepting", "1 while the edge admits new sessions",
              registry=self.registry).set_function(lambda: 1.0 if self.accepting else 0.0)
        Gauge("seminote_edge_sessions_max", "Admission limit on concurrent sessions (all workers)",
              registry=self.registry).set(self.server.max_sessions)
        self.registry.register(_WorkerCollector(pool))
        self._cpu_mark = (time.monotonic(), self._cpu_s())
        self._trusted: list[Any] = []

    @property
    def accepting(self) -> bool:
        return (not self.draining and not self.cordoned and self.pool.choose() is not None
                and self.pool.count + sum(w.pending for w in self.pool.workers) < self.server.max_sessions)

    @property
    def count(self) -> int:
        return self.pool.count

    def _cpu_s(self) -> float:
        return time.process_time() + sum(float(w.status.get("cpu_s", 0.0)) for w in self.pool.workers)

    # --- the control-plane agent's host (edge_node.agent.AgentHost) --------------------------------
    def agent_sessions(self) -> Sequence[AgentSession]:
        return [AgentSession(s["id"], s["user"], s["mode"], s["piece"], s["started_at"]) for s in self.pool.sessions()]

    def agent_metrics(self) -> HostMetrics:
        mono, cpu = time.monotonic(), self._cpu_s()
        last_mono, last_cpu = self._cpu_mark
        self._cpu_mark = (mono, cpu)
        share = max(0.0, cpu - last_cpu) / max(mono - last_mono, 1e-6) / (os.cpu_count() or 1)
        return HostMetrics(cpu_percent=round(100.0 * min(share, 1.0), 1))

    @property
    def agent_accepting(self) -> bool:
        return self.accepting

    def set_accepting(self, accepting: bool) -> None:
        self.cordoned = not accepting

    async def drain_sessions(self, deadline: float) -> None:
        self.cordoned = True
        while self.pool.count and time.time() < deadline:  # noqa: ASYNC110 (counts come from polling)
            await asyncio.sleep(WORKER_POLL_S)
        if self.pool.count:
            await self.pool.broadcast("/internal/close_all", {"reason": "drained"})

    def trust(self, pem: str) -> None:
        """The control plane's ticket key (from the agent): trusted here and pushed to every worker."""
        key = load_public_key(pem)
        for old in self._trusted:
            if old in self.public_keys:
                self.public_keys.remove(old)
        self._trusted[:] = [key]
        self.public_keys.append(key)
        task = asyncio.get_running_loop().create_task(self.pool.broadcast("/internal/keys", {"pem": pem}),
                                                      name="edge-workers-keys")
        self._key_push = task  # referenced until done


class _WorkerCollector(Collector):
    """Every live worker's metrics, summed (max for a few gauges), plus per-worker gauges."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self.texts: dict[int, str] = {}

    def collect(self) -> Any:
        families: dict[str, Metric] = {}
        values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for text in self.texts.values():
            for fam in text_string_to_metric_families(text):
                if fam.name in FRONT_OWNED:
                    continue
                if fam.name not in families:
                    families[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                    values[fam.name] = {}
                agg = values[fam.name]
                for s in fam.samples:
                    key = (s.name, tuple(sorted(s.labels.items())))
                    if fam.name in MAX_GAUGES:
                        agg[key] = max(agg.get(key, s.value), s.value)
                    else:
                        agg[key] = agg.get(key, 0.0) + s.value
        for name, fam in families.items():
            for (sample, labels), value in values[name].items():
                fam.add_sample(sample, dict(labels), value)
            yield fam
        up = Metric("seminote_edge_worker_up", "1 while the worker process answers", "gauge")
        sessions = Metric("seminote_edge_worker_sessions", "Sessions open in each worker", "gauge")
        for w in self.pool.workers:
            up.add_sample("seminote_edge_worker_up", {"worker": str(w.index)}, 1.0 if w.alive else 0.0)
            sessions.add_sample("seminote_edge_worker_sessions", {"worker": str(w.index)},
                                float(w.status.get("count", 0)))
        yield up
        yield sessions


# ------------------------------------------------------------------------------------ handlers


def _front(request: web.Request) -> Front:
    return request.app[FRONT_KEY]  # type: ignore[return-value]


def _passed(status: int, headers: dict[str, str], body: bytes) -> web.Response:
    content_type = headers.pop("Content-Type", None)
    response = web.Response(status=status, body=body, headers=headers)
    if content_type:
        response.headers["Content-Type"] = content_type
    return response


async def whip_offer(request: web.Request) -> web.StreamResponse:
    front = _front(request)
    limit = front.server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        return _error(413, "body_too_large", f"request bodies are at most {limit} bytes")
    token = _bearer(request)
    if token is None:
        return _missing_ticket()
    if request.content_type != SDP_TYPE:
        return _error(415, "unsupported_media_type", f"a WHIP offer is {SDP_TYPE}, not {request.content_type}")
    text = await _read_text(request, limit)
    if isinstance(text, web.Response):
        return text
    now = time.time()
    try:
        claims = verify_ticket(token, front.public_keys, front.settings.edge_id, now)
        if claims.ticket_id in front.guard or claims.ticket_id in front.in_flight:
            raise TicketReplayed("ticket was already used")
    except TicketError as exc:
        return _ticket_error(exc)
    retry = {"Retry-After": str(front.server.retry_after_s)}
    if front.draining or front.cordoned:
        return _error(503, "draining", "the edge is draining; try another edge", retry)
    pool = front.pool
    if pool.count + sum(w.pending for w in pool.workers) >= front.server.max_sessions:
        return _error(503, "at_capacity", f"the edge serves at most {front.server.max_sessions} sessions", retry)
    worker = pool.choose()
    if worker is None:
        return _error(503, "overloaded", "no worker of this edge is admitting sessions now", retry)
    front.in_flight.add(claims.ticket_id)
    worker.pending += 1
    try:
        status, headers, body = await worker.request(
            "POST", "/v1/whip", headers={"Authorization": f"Bearer {token}", "Content-Type": SDP_TYPE},
            body=text.encode())
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        log.warning("offer could not reach its worker", worker=worker.index, error=repr(exc))
        return _error(503, "overloaded", "the edge's worker did not answer", retry)
    finally:
        worker.pending -= 1
        front.in_flight.discard(claims.ticket_id)
    if (status == 201 or (status == 403 and b"ticket_replayed" in body)) and claims.ticket_id not in front.guard:
        front.guard.check_and_remember(claims, now)  # used: no worker may take this ticket again
    if status == 201:
        pool.owner[claims.session_id] = worker
        worker.status["count"] = int(worker.status.get("count", 0)) + 1
    return _passed(status, headers, body)


async def _forward_session(request: web.Request) -> web.StreamResponse:
    front = _front(request)
    sid = request.match_info["session_id"]
    worker = front.pool.owner.get(sid)
    if worker is None or not worker.alive:
        if _bearer(request) is None:
            return _missing_ticket()
        return _error(404, "session_not_found", f"no open session {sid!r}")
    headers = {k: v for k, v in request.headers.items() if k in ("Authorization", "Content-Type")}
    body = await request.read() if request.can_read_body else None
    try:
        status, out_headers, out = await worker.request(request.method, request.path_qs, headers=headers, body=body)
    except (aiohttp.ClientError, TimeoutError, OSError):
        return _error(404, "session_not_found", f"no open session {sid!r}")
    if request.method == "DELETE" and status == 204:
        front.pool.owner.pop(sid, None)
    return _passed(status, out_headers, out)


async def healthz(request: web.Request) -> web.StreamResponse:
    front = _front(request)
    workers = [{"worker": w.index, "alive": w.alive, "sessions": int(w.status.get("count", 0))}
               for w in front.pool.workers]
    ok = bool(front.pool.alive)
    return web.json_response({"status": "ok" if ok else "no_workers", "edge_id": front.settings.edge_id,
                              "workers": workers}, status=200 if ok else 503)


async def readyz(request: web.Request) -> web.StreamResponse:
    front = _front(request)
    body = {"ready": front.accepting, "sessions": front.count, "max_sessions": front.server.max_sessions,
            "workers": len(front.pool.alive)}
    headers = None if front.accepting else {"Retry-After": str(front.server.retry_after_s)}
    return web.json_response(body, status=200 if front.accepting else 503, headers=headers)


async def metrics_handler(request: web.Request) -> web.StreamResponse:
    front = _front(request)
    collector = next(c for c in front.registry._collector_to_names if isinstance(c, _WorkerCollector))

    async def scrape(w: Worker) -> tuple[int, str | None]:
        try:
            status, _, body = await w.request("GET", "/metrics")
        except (aiohttp.ClientError, TimeoutError, OSError):
            return w.index, None
        return w.index, body.decode() if status == 200 else None

    results = await asyncio.gather(*(scrape(w) for w in front.pool.alive))
    collector.texts = {i: t for i, t in results if t is not None}
    return web.Response(body=generate_latest(front.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_front_app(settings: EdgeSettings, pool: WorkerPool) -> tuple[web.Application, Front]:
    server = settings.server
    front = Front(settings, pool)
    private_key = None
    if not settings.control.addr or server.ticket_public_key or server.ticket_private_key:
        front.public_keys, private_key = load_ticket_keys(server)
    if server.dev_tickets and private_key is None:
        raise ConfigError("server.dev_tickets", "needs server.ticket_private_key to sign tickets with")
    app = web.Application(client_max_size=server.max_body_bytes)
    app[FRONT_KEY] = front
    app[SETTINGS_KEY] = settings
    if private_key is not None:
        app[SIGNER_KEY] = private_key
    add_public_routes(app, whip=whip_offer, delete=_forward_session, patch=_forward_session, healthz=healthz,
                      readyz=readyz, metrics=metrics_handler, dev_tickets=server.dev_tickets)
    return app, front


async def serve_front(settings: EdgeSettings, notify: NotifyConfig | None, log_format: str) -> int:
    """Run the front and its workers until SIGINT/SIGTERM, then drain them all (module docstring).
    Returns the exit code: 0 when every worker stopped cleanly."""
    structlog.contextvars.bind_contextvars(edge_id=settings.edge_id)
    stop = asyncio.Event()
    cut_short = asyncio.Event()
    loop = asyncio.get_running_loop()
    pool = WorkerPool(settings, worker_count(settings), "json" if log_format == "auto" and not sys.stderr.isatty()
                      else log_format)

    def on_signal() -> None:
        (cut_short if stop.is_set() else stop).set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    app, front = create_front_app(settings, pool)
    notifier = Notifier(notify or NotifyConfig(), status=lambda: service_status(front))
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=settings.server.shutdown_grace_s)
    agent: EdgeAgent | None = None
    sync: ResultSync | None = None
    codes: list[int | None] = []
    await notifier.start()
    try:
        await pool.start()
        await runner.setup()
        if settings.sync.enabled:  # one relay for the outbox file every worker writes
            sync = ResultSync(settings.sync, settings.edge_id, registry=front.registry)
            await sync.start()
        site = web.TCPSite(runner, settings.server.host, settings.server.port)
        await site.start()
        server = getattr(site, "_server", None)
        host, port = settings.server.host, settings.server.port
        if server is not None and server.sockets:
            host, port = server.sockets[0].getsockname()[:2]
        log.info("edge listening", url=f"http://{host}:{port}/", max_sessions=settings.server.max_sessions,
                 workers=len(pool.workers))
        if settings.control.addr:
            agent = EdgeAgent(settings.control, edge_identity(settings, f"http://{host}:{port}"), front,
                              on_public_key=front.trust)
            await agent.start()
        notifier.ready(service_status(front))
        await stop.wait()
        timeout_s = settings.service.drain_timeout_s
        log.info("edge stopping", sessions=front.count, drain_timeout_s=timeout_s)
        front.draining = True
        notifier.stopping(service_status(front, draining=True))
        if agent is not None:
            agent.announce_drain(time.time() + timeout_s)
        pool.signal_all(signal.SIGTERM)  # each worker drains its own sessions up to the same deadline
        deadline = loop.time() + timeout_s
        next_extend = loop.time()
        while pool.running and front.count and not cut_short.is_set() and loop.time() < deadline:
            if loop.time() >= next_extend:
                next_extend = loop.time() + EXTEND_PERIOD_S
                notifier.extend_timeout(EXTEND_PERIOD_S + EXTEND_MARGIN_S)
                notifier.status(service_status(front, draining=True))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(cut_short.wait(), DRAIN_POLL_S)
        log.info("edge drained", sessions_left=front.count, cut_short=cut_short.is_set())
        if cut_short.is_set():  # the second signal goes on to the workers: they end their sessions now
            pool.signal_all(signal.SIGINT)  # not SIGTERM again: two pending SIGTERMs would merge into one
    finally:
        notifier.extend_timeout(3 * settings.server.shutdown_grace_s + STOP_MARGIN_S + WORKER_EXIT_GRACE_S)
        front.draining = True
        if not stop.is_set():  # failed before the drain: stop the workers now
            pool.signal_all(signal.SIGTERM)
        codes = await pool.aclose(settings.service.drain_timeout_s + 3 * settings.server.shutdown_grace_s
                                  + WORKER_EXIT_GRACE_S)
        if agent is not None:
            await agent.aclose()
        await runner.cleanup()
        if sync is not None:
            notifier.status("flushing the outbox")
            await sync.drain(settings.server.shutdown_grace_s)
            await sync.aclose()
        await notifier.aclose()
    failed = [c for c in codes if c != 0]
    log.info("edge stopped", worker_exit_codes=codes)
    return 1 if failed else 0
