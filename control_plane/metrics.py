"""Prometheus metrics of the control plane, served on their own listener (``metrics.port``).

Everything is read from the live objects when Prometheus scrapes (a custom collector), so the route
hot path and the registry pay nothing for being measured:

| metric | what |
|---|---|
| ``seminote_control_routes_total{outcome}`` | route requests: ``routed`` to an edge, ``on_device``, ``exhausted`` (no capacity); ``rate()`` gives routes/s |
| ``seminote_control_edges{state}`` | edges by state: serving, cordoned, draining, drained, stale, disconnected |
| ``seminote_control_sessions{state}`` | sessions the edges report (``active``) and routed but not yet seen (``pending``) |
| ``seminote_control_capacity_sessions`` | session capacity of the routable (serving) edges |
| ``seminote_control_edge_outbox_rows{stat}`` | result rows waiting in the edges' outboxes: ``sum`` and ``max`` over edges |
| ``seminote_control_ingest_*_total`` | result sync ingest: messages, results, summaries, dead letters (when sync is enabled) |

plus ``process_*`` (CPU, memory, fds) of the control-plane process.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from .errors import ConfigError
from .registry import EdgeState

if TYPE_CHECKING:
    from .app import ControlPlane
    from .settings import MetricsSettings

log = structlog.get_logger(__name__)

INGEST_COUNTERS = {
    "messages": "Result messages taken from the stream",
    "duplicate_messages": "Messages already stored (redelivery or duplicate publish)",
    "results": "note/score results stored",
    "summaries": "Session summaries stored",
    "deadlettered": "Messages parked in the dead-letter stream",
}


class ControlPlaneCollector(Collector):
    """Reads a :class:`~control_plane.app.ControlPlane` at scrape time."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp

    def collect(self) -> Iterator[Metric]:
        cp = self.cp
        if cp.dispatcher is not None:
            c = cp.dispatcher.counters
            routes = CounterMetricFamily(
                "seminote_control_routes", "Route requests by outcome (rate() gives routes/s)", labels=["outcome"])
            routes.add_metric(["routed"], c.total - c.exhausted - c.on_device)
            routes.add_metric(["on_device"], c.on_device)
            routes.add_metric(["exhausted"], c.exhausted)
            yield routes
        if cp.registry is not None:
            edges = list(cp.registry.edges.values())
            by_state = dict.fromkeys(EdgeState, 0)
            active = pending = capacity = outbox_sum = outbox_max = 0
            for e in edges:
                by_state[e.state] += 1
                active += len(e.sessions)
                pending += len(e.pending)
                if e.state is EdgeState.SERVING:
                    capacity += e.capacity
                outbox_sum += e.load.outbox_depth
                outbox_max = max(outbox_max, e.load.outbox_depth)
            states = GaugeMetricFamily("seminote_control_edges", "Known edges by state", labels=["state"])
            for state, n in by_state.items():
                states.add_metric([state.value], n)
            yield states
            sessions = GaugeMetricFamily("seminote_control_sessions", "Sessions on the fleet", labels=["state"])
            sessions.add_metric(["active"], active)
            sessions.add_metric(["pending"], pending)
            yield sessions
            yield GaugeMetricFamily("seminote_control_capacity_sessions",
                                    "Session capacity of the serving edges", value=capacity)
            outbox = GaugeMetricFamily("seminote_control_edge_outbox_rows",
                                       "Result rows waiting in edge outboxes (from load reports)", labels=["stat"])
            outbox.add_metric(["sum"], outbox_sum)
            outbox.add_metric(["max"], outbox_max)
            yield outbox
        if cp.ingest is not None:
            counters = cp.ingest.counters
            for name, doc in INGEST_COUNTERS.items():
                yield CounterMetricFamily(f"seminote_control_ingest_{name}", doc, value=getattr(counters, name))


def control_registry(cp: ControlPlane) -> CollectorRegistry:
    """A registry with the control plane's collector and this process's ``process_*`` metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ControlPlaneCollector(cp))
    ProcessCollector(registry=registry)
    return registry


class MetricsServer:
    """``GET /metrics`` on ``settings.host:settings.port``. ``async with MetricsServer(...)``."""

    def __init__(self, settings: MetricsSettings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.registry = registry
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._state = "new"

    async def start(self) -> None:
        if self._state != "new":
            raise RuntimeError(f"metrics server cannot start: it is {self._state}")
        self._state = "running"
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ConfigError("metrics.port", f"cannot listen on {self.settings.host}:{self.settings.port}: "
                                              f"{exc.strerror or exc}") from exc
        self.port = self._runner.addresses[0][1]
        log.info("metrics listening", url=f"http://{self.settings.host}:{self.port}/metrics")

    async def aclose(self) -> None:
        """Stop listening. Safe twice."""
        if self._state == "closed":
            return
        self._state = "closed"
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
