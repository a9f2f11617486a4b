"""``seminote-edge serve``: the edge daemon (WHIP ingest, live analysis, feedback over data channels)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import structlog
from aiohttp import web

from ..agent import EdgeAgent, agent_for_server
from ..envconfig import EXIT_CONFIG, SettingsInvalid, load_settings
from ..errors import SeminoteEdgeError
from ..lifecycle import drain, register_lifecycle_metrics, service_status
from ..logs import configure_logging
from ..relay_process import ResultSync
from ..sdnotify import PROTOCOL_ENV, Notifier, NotifyConfig
from ..settings import EdgeSettings
from ..signaling import MANAGER_KEY, create_app
from ..workers import serve_front, worker_count

STOP_MARGIN_S = 10.0  # systemd stop-timeout slack beyond the final teardown's own limits


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "serve",
        help="run the edge daemon: WHIP ingest, live analysis, feedback over data channels",
        description=(
            "Serves practice sessions over WebRTC (WHIP at POST /v1/whip) and the practice page at /. "
            "Settings come from SEMINOTE_EDGE_* environment variables (and --env-file); the options "
            "below override them."
        ),
    )
    p.add_argument("--host", help="listen address (default: server.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default: server.port, 8080; 0 picks a free one)")
    p.add_argument("--env-file", help="read settings from this env file too (systemd EnvironmentFile style)")
    p.add_argument("--log-format", choices=("auto", "json", "console"), default="auto",
                   help="log lines as JSON (default when stderr is not a terminal) or for people")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Exit 0 after a clean stop, 2 when the settings are wrong (one line per wrong setting)."""
    configure_logging(args.log_format)
    # service lifecycle (issue 8): the systemd protocol's variables are read here, once, and removed
    # so that no child process notifies on the daemon's behalf.
    notify = NotifyConfig.from_environ(os.environ)
    for name in PROTOCOL_ENV:
        os.environ.pop(name, None)
    try:
        settings, warnings = load_settings(EdgeSettings, Path(args.env_file) if args.env_file else None,
                                           os.environ)
    except SettingsInvalid as exc:
        for line in exc.lines:
            print(f"seminote-edge serve: invalid settings: {line}", file=sys.stderr)
        return EXIT_CONFIG
    for line in warnings:
        structlog.get_logger("edge_node.serve").warning(line)
    try:
        updates = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        if updates:
            settings = settings.model_copy(update={"server": settings.server.model_copy(update=updates)})
        if worker_count(settings) > 1:  # all cores (issue 8): a front process and one worker per core
            return asyncio.run(serve_front(settings, notify, args.log_format))
        app = create_app(settings)
    except SeminoteEdgeError as exc:
        print(f"seminote-edge serve: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    asyncio.run(serve(app, settings, notify))
    return 0


async def serve(app: web.Application, settings: EdgeSettings, notify: NotifyConfig | None = None) -> None:
    """Run until SIGINT/SIGTERM; then stop taking sessions, tell the control plane, let the open ones
    finish up to ``service.drain_timeout_s``, end the rest, stop the server, flush the outbox.

    ``notify`` (systemd ``Type=notify``): READY=1 once listening, STATUS= lines, WATCHDOG=1 from this
    event loop, STOPPING=1 and EXTEND_TIMEOUT_USEC during the drain. A second signal cuts the drain short.
    """
    log = structlog.get_logger("edge_node.serve")
    structlog.contextvars.bind_contextvars(edge_id=settings.edge_id)
    stop = asyncio.Event()
    cut_short = asyncio.Event()  # service lifecycle (issue 8): a second signal ends the drain
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        (cut_short if stop.is_set() else stop).set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, on_signal)
    manager = app[MANAGER_KEY]
    notifier = Notifier(notify or NotifyConfig(), status=lambda: service_status(manager))
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=settings.server.shutdown_grace_s)
    agent: EdgeAgent | None = None
    sync: ResultSync | None = None  # result sync (issue 5)
    await runner.setup()
    await notifier.start()
    try:
        # result sync (issue 5): sessions record results in the outbox; a relay process ships them to NATS.
        if settings.sync.enabled:
            sync = ResultSync(settings.sync, settings.edge_id, registry=app[MANAGER_KEY].metrics.registry)
            await sync.start()
            app[MANAGER_KEY].results = sync.outbox
        site = web.TCPSite(runner, settings.server.host, settings.server.port)
        await site.start()
        server = getattr(site, "_server", None)
        host, port = settings.server.host, settings.server.port
        if server is not None and server.sockets:
            host, port = server.sockets[0].getsockname()[:2]
        log.info("edge listening", url=f"http://{host}:{port}/", max_sessions=settings.server.max_sessions)
        # control-plane agent (issue 4): registers this edge when SEMINOTE_EDGE_CONTROL__ADDR is set.
        agent = agent_for_server(settings, app[MANAGER_KEY], f"http://{host}:{port}")
        if agent is not None:
            await agent.start()
        register_lifecycle_metrics(manager.metrics.registry, manager)
        notifier.ready(service_status(manager))
        await stop.wait()
        # service lifecycle (issue 8): stop taking sessions, tell systemd and the control plane, drain.
        timeout_s = settings.service.drain_timeout_s
        log.info("edge stopping", sessions=manager.count, drain_timeout_s=timeout_s)
        manager.drain()
        notifier.stopping(service_status(manager, draining=True))
        if agent is not None:
            agent.announce_drain(time.time() + timeout_s)
        left = await drain(manager, timeout_s, notifier, cut_short)
        log.info("edge drained", sessions_left=left, cut_short=cut_short.is_set())
    finally:
        # Ending the rest, the server and the outbox flush each take at most about shutdown_grace_s.
        notifier.extend_timeout(3 * settings.server.shutdown_grace_s + STOP_MARGIN_S)
        if agent is not None:
            await agent.aclose()
        await runner.cleanup()
        if sync is not None:  # result sync (issue 5): sessions are closed, so flush the outbox last
            notifier.status("flushing the outbox")
            await sync.drain(settings.server.shutdown_grace_s)
            await sync.aclose()
        await notifier.aclose()
    log.info("edge stopped")
