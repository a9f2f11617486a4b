"""Route workers: extra processes that serve ``Router.Route`` on ``grpc.route_port`` (SO_REUSEPORT).

Python runs one route at a time per process, so past about a core's worth of routes the control plane
scales out: each worker holds a replica of what routing reads (every region's positions, capacity,
load, routability; refreshed every ``routing.replica_interval_s`` from the main process, membership
only when edges join or leave), routes and signs tickets itself, and sends what it routed back in
batches, so the main process counts those sessions as pending and records them. A worker's view of
load lags by at most one refresh plus one batch; power of two choices keeps a burst spread anyway.
The main process keeps everything else (edge streams, fleet admin, the gateway, the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import multiprocessing.connection
import random
import signal
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .dispatch import Dispatcher
from .fleet_index import FleetIndex, Member, warm_up
from .registry import Registry
from .router import Candidate, CandidateSet, Decision, Plan, Policy
from .settings import ControlSettings
from .store import Store

log = structlog.get_logger(__name__)
T = TypeVar("T")

BATCH_INTERVAL_S = 0.05
WORKER_START_TIMEOUT_S = 60.0
WORKER_STOP_TIMEOUT_S = 5.0


# ------------------------------------------------------------------------------- worker side


@dataclass(slots=True)
class ReplicaEdge:
    whip_url: str
    region: str
    vec: tuple[float, float, float]
    slot: int


class Replica:
    """The worker's copy of what routing reads (a :class:`~control_plane.dispatch.RouteSource`)."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self.version = -1
        self.fleet = FleetIndex()
        self._edges: dict[str, ReplicaEdge] = {}

    @property
    def edges(self) -> Mapping[str, ReplicaEdge]:
        return self._edges

    def load(self, snap: dict[str, Any]) -> None:
        if "members" in snap:
            members = [Member(edge_id, region, tuple(vec), capacity, detailed)
                       for edge_id, region, vec, capacity, detailed in snap["members"]]
            self.fleet = FleetIndex(members)
            self._edges = {m.edge_id: ReplicaEdge(url, m.region, m.vec, self.fleet.slots[m.edge_id])
                           for m, url in zip(members, snap["whip_urls"], strict=True)}
            self.version = snap["version"]
        if snap["version"] != self.version:
            return  # loads for a membership we do not have yet; the main process sends it next
        self.fleet.set_loads(*snap["loads"])

    def region_centroid(self, region: str) -> tuple[float, float, float] | None:
        return self.fleet.centroid(region)

    def candidates(self, vec: tuple[float, float, float], rtts: Mapping[str, float],
                   regions_scanned: int) -> CandidateSet:
        fresh_since = time.monotonic() - self.ttl_s
        cs = self.fleet.candidates(vec, regions_scanned, fresh_since)
        if not rtts:
            return cs
        position = {edge_id: i for i, edge_id in enumerate(cs.edge_ids.tolist())}
        extra: list[Candidate] = []
        for edge_id, measured in rtts.items():
            if edge_id in position:
                cs.rtt_ms[position[edge_id]] = measured
            elif (e := self._edges.get(edge_id)) is not None and self.fleet.routable(e.slot, fresh_since):
                extra.append(self.fleet.candidate(e.slot, measured))
        return CandidateSet.concat([cs, CandidateSet.of(extra)]) if extra else cs

    def decide_near(self, vec: tuple[float, float, float], p: Plan, policy: Policy, rng: random.Random,
                    regions_scanned: int) -> Decision:
        return self.fleet.decide(vec, p, policy, rng, regions_scanned, time.monotonic() - self.ttl_s)

    def note_routed(self, edge_id: str, session_id: str) -> None:
        e = self._edges.get(edge_id)
        if e is not None:
            self.fleet.in_use[e.slot] += 1


class Batch:
    """What a worker routed since its last batch (a :class:`~control_plane.dispatch.RouteLog`)."""

    def __init__(self) -> None:
        self.sessions: list[tuple[str, dict[str, Any]]] = []
        self.routes: list[dict[str, Any]] = []

    def session_changed(self, session_id: str, **fields: Any) -> None:
        self.sessions.append((session_id, fields))

    def route_recorded(self, row: dict[str, Any]) -> None:
        self.routes.append(row)

    def take(self) -> dict[str, Any] | None:
        if not self.sessions and not self.routes:
            return None
        out = {"sessions": self.sessions, "routes": self.routes}
        self.sessions, self.routes = [], []
        return out


async def _serve_worker(settings: ControlSettings, key_pem: str, conn: multiprocessing.connection.Connection,
                        index: int) -> None:
    from edge_node.tickets import load_private_key

    from .app import server_credentials
    from .server import Authenticator, router_handlers

    replica = Replica(settings.registry.ttl_s)
    batch = Batch()
    dispatcher = Dispatcher(replica, batch, settings.routing, load_private_key(key_pem))
    # No interceptor: the one method served here checks its caller itself (same codes as the main port).
    server = grpc.aio.server(options=[
        ("grpc.so_reuseport", 1), ("grpc.max_receive_message_length", settings.grpc.max_message_bytes)])
    server.add_generic_rpc_handlers((router_handlers(dispatcher, Authenticator(settings.auth)),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = f"{settings.grpc.host}:{settings.grpc.route_port}"
    credentials = server_credentials(settings.grpc)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    io = ThreadPoolExecutor(max_workers=2, thread_name_prefix="route-worker-pipe")  # recv + send, never starved
    loop = asyncio.get_running_loop()
    first = await loop.run_in_executor(io, conn.recv)
    replica.load(first)
    warm_up()  # compile (or load) the policy kernels before the first call, not during it
    # Start-up objects leave the collector's working set: fewer, cheaper collections while routing.
    gc.collect()
    gc.freeze()
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await loop.run_in_executor(io, conn.send, {"ready": port})
    log.info("route worker serving", worker=index, port=port)

    async def receive() -> None:
        while True:
            replica.load(await loop.run_in_executor(io, conn.recv))

    async def report() -> None:
        last = (0, 0, 0)
        while True:
            await asyncio.sleep(BATCH_INTERVAL_S)
            c = dispatcher.counters
            counts = (c.total, c.exhausted, c.on_device)
            taken = batch.take()
            if taken is not None or counts != last:
                payload = taken or {"sessions": [], "routes": []}
                payload["counters"] = tuple(b - a for a, b in zip(last, counts, strict=True))
                last = counts
                await loop.run_in_executor(io, conn.send, payload)

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(receive(), name=f"worker-{index}-receive")
            tg.create_task(report(), name=f"worker-{index}-report")
    except* (EOFError, OSError, BrokenPipeError):
        pass  # the main process went away or closed our pipe: stop
    finally:
        await server.stop(1.0)
        io.shutdown(wait=False, cancel_futures=True)


def worker_entry(settings_json: str, key_pem: str, conn: multiprocessing.connection.Connection, index: int) -> None:
    """Process entry point (spawned): serve routes until the main process closes the pipe."""
    from .logs import configure_logging

    settings = ControlSettings.model_validate_json(settings_json)
    configure_logging(settings.log_format, settings.log_level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when workers stop
    asyncio.run(_serve_worker(settings, key_pem, conn, index))


# ------------------------------------------------------------------------------- main side


class WorkerPool:
    """Starts ``routing.workers`` route workers, feeds them the fleet and applies what they route."""

    def __init__(self, settings: ControlSettings, key_pem: str, registry: Registry, store: Store,
                 dispatcher: Dispatcher) -> None:
        self.settings = settings
        self.key_pem = key_pem
        self.registry = registry
        self.store = store
        self.dispatcher = dispatcher
        self.port: int | None = None
        self._procs: list[BaseProcess] = []
        self._conns: list[multiprocessing.connection.Connection] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        # Pipe I/O blocks (a recv waits for the next batch; a send waits while a busy worker's pipe is
        # full), so it gets threads of its own, two per worker: on the default executor (6 threads on 2
        # cores) three workers' blocked recvs and sends starved the snapshot feed, and the workers'
        # replicas went stale (every route RESOURCE_EXHAUSTED) under load.
        self._io: ThreadPoolExecutor | None = None

    async def _pipe(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._io is not None
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    async def start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._io = ThreadPoolExecutor(max_workers=2 * self.settings.routing.workers + 1,
                                      thread_name_prefix="route-worker-pipe")
        settings_json = self.settings.model_dump_json()
        for i in range(self.settings.routing.workers):
            parent, child = ctx.Pipe(duplex=True)
            proc = ctx.Process(target=worker_entry, args=(settings_json, self.key_pem, child, i),
                               name=f"seminote-route-worker-{i}", daemon=True)
            proc.start()
            child.close()
            self._procs.append(proc)
            self._conns.append(parent)
            await self._pipe(parent.send, self.registry.snapshot(full=True))
        for i, conn in enumerate(self._conns):
            ready = await asyncio.wait_for(self._pipe(conn.recv), WORKER_START_TIMEOUT_S)
            self.port = ready["ready"]
            self._tasks.append(asyncio.create_task(self._feed(conn), name=f"worker-{i}-feed"))
            self._tasks.append(asyncio.create_task(self._apply(conn), name=f"worker-{i}-apply"))
        log.info("route workers started", workers=len(self._procs), port=self.port)

    async def _feed(self, conn: multiprocessing.connection.Connection) -> None:
        version = self.registry.version
        try:
            while True:
                await asyncio.sleep(self.settings.routing.replica_interval_s)
                full = self.registry.version != version
                version = self.registry.version
                await self._pipe(conn.send, self.registry.snapshot(full=full))
        except (EOFError, OSError) as exc:  # the worker died: its port share goes, the others keep serving
            log.error("route worker gone", error=repr(exc))

    async def _apply(self, conn: multiprocessing.connection.Connection) -> None:
        try:
            await self._apply_batches(conn)
        except (EOFError, OSError) as exc:
            log.error("route worker gone", error=repr(exc))

    async def _apply_batches(self, conn: multiprocessing.connection.Connection) -> None:
        counters = self.dispatcher.counters
        while True:
            batch = await self._pipe(conn.recv)
            for session_id, fields in batch["sessions"]:
                if fields.get("state") == "routed":
                    self.registry.note_routed(fields["edge_id"], session_id)
                self.store.session_changed(session_id, **fields)
            for row in batch["routes"]:
                self.store.route_recorded(row)
            total, exhausted, on_device = batch.get("counters", (0, 0, 0))
            counters.total += total
            counters.exhausted += exhausted
            counters.on_device += on_device

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for conn in self._conns:
            conn.close()  # the worker's recv sees EOF and stops
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, EOFError, OSError):
                await task
        for proc in self._procs:
            await asyncio.to_thread(proc.join, WORKER_STOP_TIMEOUT_S)
            if proc.is_alive():
                proc.kill()
                await asyncio.to_thread(proc.join, WORKER_STOP_TIMEOUT_S)
        if self._io is not None:
            self._io.shutdown(wait=False, cancel_futures=True)
