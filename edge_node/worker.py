"""One worker process of a multi-worker edge (``server.workers`` > 1): ``python -m edge_node.worker``.

The front process (:mod:`edge_node.workers`) starts one per core. Each is a complete edge on its own
event loop — the same app, session manager, pipelines and WebRTC peers as a single-process edge — but
its HTTP side listens on a private unix socket that only the front talks to, and its media (ICE/UDP)
goes straight between the client and this process. Besides the public routes it serves
``/internal/*`` to the front: its status (sessions, admission, CPU), the control plane's ticket key,
admission on/off, close-all. Settings arrive as JSON on stdin (they may hold the ticket key).

SIGTERM drains it exactly like a single-process edge: no new sessions, open ones play on up to
``service.drain_timeout_s``, the rest end with their final events, results are written to the shared
outbox file (the front runs its one relay), exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import os
import signal
import sys
import time
from typing import Any

import structlog
from aiohttp import web

from .lifecycle import drain
from .logs import configure_logging
from .outbox import Outbox
from .sdnotify import Notifier, NotifyConfig
from .settings import EdgeSettings
from .signaling import MANAGER_KEY, create_app
from .tickets import load_public_key

log = structlog.get_logger(__name__)

GC_GEN0_THRESHOLD = 20_000  # allocations between young collections (CPython's default: 700)


def add_internal_routes(app: web.Application) -> None:
    """The front's view into this worker (reachable only through the worker's private unix socket)."""
    manager = app[MANAGER_KEY]
    trusted: list[Any] = []  # the control plane's key as last pushed by the front

    async def status(request: web.Request) -> web.StreamResponse:
        wall_now, mono_now = time.time(), time.monotonic()
        sessions = [
            {"id": s.id, "user": s.claims.user, "mode": str(s.pipeline.mode), "piece": s.piece or "",
             "started_at": wall_now - (mono_now - s.created_at)}
            for s in list(manager.sessions.values())
        ]
        return web.json_response({
            "pid": os.getpid(), "sessions": sessions, "count": manager.count, "accepting": manager.accepting,
            "loop_lag_s": manager.loop_lag_s, "cpu_s": time.process_time(),
        })

    async def keys(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        key = load_public_key(str(body["pem"]))
        for old in trusted:
            if old in manager.public_keys:
                manager.public_keys.remove(old)
        trusted[:] = [key]
        manager.public_keys.append(key)
        return web.Response(status=204)

    async def accepting(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body.get("accepting"):
            manager.undrain()
        else:
            manager.drain()
        return web.Response(status=204)

    async def close_all(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        await manager.close_all(str(body.get("reason") or "drained"))
        return web.Response(status=204)

    app.router.add_get("/internal/status", status)
    app.router.add_post("/internal/keys", keys)
    app.router.add_post("/internal/accepting", accepting)
    app.router.add_post("/internal/close_all", close_all)


async def serve_worker(app: web.Application, settings: EdgeSettings, socket_path: str, index: int) -> None:
    """Serve on ``socket_path`` until SIGTERM/SIGINT, then drain like ``seminote-edge serve``."""
    structlog.contextvars.bind_contextvars(edge_id=settings.edge_id, worker=index)
    stop = asyncio.Event()
    cut_short = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        (cut_short if stop.is_set() else stop).set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    manager = app[MANAGER_KEY]
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=settings.server.shutdown_grace_s)
    outbox: Outbox | None = None
    await runner.setup()
    try:
        if settings.sync.enabled:  # result sync: the shared outbox file; the front's relay ships it
            outbox = Outbox(settings.sync, settings.edge_id, registry=manager.metrics.registry)
            await outbox.start()
            manager.results = outbox
        site = web.UnixSite(runner, socket_path)
        await site.start()
        log.info("worker listening", socket=socket_path, pid=os.getpid())
        await stop.wait()
        timeout_s = settings.service.drain_timeout_s
        log.info("worker stopping", sessions=manager.count, drain_timeout_s=timeout_s)
        manager.drain()
        left = await drain(manager, timeout_s, Notifier(NotifyConfig()), cut_short)
        log.info("worker drained", sessions_left=left, cut_short=cut_short.is_set())
    finally:
        await runner.cleanup()
        if outbox is not None:
            with contextlib.suppress(Exception):
                await outbox.flush()
            await outbox.aclose()
    log.info("worker stopped")


PR_SET_PDEATHSIG = 1


def exit_with_front() -> bool:
    """Ask Linux to send this worker SIGTERM when the front process dies, even by SIGKILL (under
    systemd the control group is killed anyway; elsewhere a worker must not outlive its edge, holding
    its sessions and UDP ports). False when the front is already gone."""
    front = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    return os.getppid() == front and front != 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edge_node.worker", description=__doc__)
    ap.add_argument("--index", type=int, required=True)
    ap.add_argument("--socket", required=True)
    ap.add_argument("--log-format", choices=("auto", "json", "console"), default="json")
    args = ap.parse_args(argv)
    if not exit_with_front():
        return 1
    configure_logging(args.log_format)
    settings = EdgeSettings.model_validate_json(sys.stdin.read())
    app = create_app(settings)
    add_internal_routes(app)
    # Hundreds of peers keep a large heap of long-lived objects: a full collection walking it stalls
    # the loop for tens of ms (feedback p99). What exists now is frozen out of collections, and young
    # collections run less often.
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 50)
    asyncio.run(serve_worker(app, settings, args.socket, args.index))
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # stopped cleanly: a late signal must not turn that into -15
    return 0


if __name__ == "__main__":
    sys.exit(main())
