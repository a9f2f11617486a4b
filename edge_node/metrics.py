"""Prometheus metrics of one edge process (``GET /metrics``).

Each :class:`EdgeMetrics` has its own registry, so several edges (tests) can live in one process.
"""

from __future__ import annotations

import asyncio
import threading

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "EdgeMetrics"]

# Feedback latency inside the edge is a few milliseconds; the buckets resolve that range finely.
LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1.0,
)


class EdgeMetrics:
    """The counters, gauges and histograms the edge exports."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.sessions_active = Gauge(
            "seminote_edge_sessions", "Practice sessions open now", registry=r
        )
        self.sessions_max = Gauge(
            "seminote_edge_sessions_max", "Admission limit on concurrent sessions", registry=r
        )
        self.sessions_opened = Counter(
            "seminote_edge_sessions_opened", "Sessions accepted (WHIP offers answered)", registry=r
        )
        self.sessions_closed = Counter(
            "seminote_edge_sessions_closed", "Sessions ended, by reason", ["reason"], registry=r
        )
        self.offers_rejected = Counter(
            "seminote_edge_offers_rejected", "WHIP offers refused, by reason", ["reason"], registry=r
        )
        self.feedback_latency = Histogram(
            "seminote_edge_feedback_latency_seconds",
            "From the arrival of the audio packet that completed a chunk to its events being sent",
            buckets=LATENCY_BUCKETS_S, registry=r,
        )
        self.events_sent = Counter(
            "seminote_edge_events_sent", "Feedback events sent on data channels, by type", ["type"],
            registry=r,
        )
        self._events_sent_by_type: dict[str, Counter] = {}
        self.audio_frames = Counter(
            "seminote_edge_audio_frames", "Opus frames decoded", registry=r
        )
        self.frames_dropped = Counter(
            "seminote_edge_audio_frames_dropped",
            "Audio lost on the way in: late or duplicate packets dropped, gaps concealed",
            ["kind"], registry=r,
        )
        self.control_messages = Counter(
            "seminote_edge_control_messages", "Control messages received, by outcome", ["outcome"],
            registry=r,
        )
        self.errors = Counter(
            "seminote_edge_errors", "Error events sent to clients, by code", ["code"], registry=r
        )

        self.loop_lag = Gauge(
            "seminote_edge_event_loop_lag_seconds",
            "How late the session watchdog woke up: above server.overload_lag_ms new sessions get 503",
            registry=r,
        )
        # Leak watch: resident memory, CPU and fds (process_*), asyncio tasks and threads.
        ProcessCollector(registry=r)
        Gauge(
            "seminote_edge_asyncio_tasks", "Tasks alive in the edge's event loop", registry=r
        ).set_function(_task_count)
        Gauge("seminote_edge_threads", "Threads alive in the edge process", registry=r).set_function(
            threading.active_count
        )

    def event_sent(self, event_type: str) -> None:
        """Count one feedback event; the labelled child is cached (``labels()`` costs more than
        the increment, and this runs for every event of every session)."""
        child = self._events_sent_by_type.get(event_type)
        if child is None:
            child = self._events_sent_by_type[event_type] = self.events_sent.labels(event_type)
        child.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _task_count() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # scraped outside the event loop
        return float("nan")
