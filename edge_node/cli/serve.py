"""``seminote-edge serve``: the edge daemon (WHIP ingest, live analysis, feedback over data channels)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

import structlog
from aiohttp import web

from ..agent import EdgeAgent, agent_for_server
from ..errors import SeminoteEdgeError
from ..outbox import Outbox
from ..relay import Relay
from ..settings import EdgeSettings
from ..signaling import MANAGER_KEY, create_app


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


def configure_logging(fmt: str = "auto") -> None:
    """structlog once per process: context variables first, JSON lines unless on a terminal."""
    json_lines = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_format)
    try:
        settings = EdgeSettings(_env_file=args.env_file) if args.env_file else EdgeSettings()
        updates = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        if updates:
            settings = settings.model_copy(update={"server": settings.server.model_copy(update=updates)})
        app = create_app(settings)
    except SeminoteEdgeError as exc:
        print(f"seminote-edge serve: error: {exc}", file=sys.stderr)
        return 1
    asyncio.run(serve(app, settings))
    return 0


async def serve(app: web.Application, settings: EdgeSettings) -> None:
    """Run until SIGINT/SIGTERM; then stop taking sessions, end the open ones, stop the server."""
    log = structlog.get_logger("edge_node.serve")
    structlog.contextvars.bind_contextvars(edge_id=settings.edge_id)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=settings.server.shutdown_grace_s)
    agent: EdgeAgent | None = None
    outbox: Outbox | None = None  # result sync (issue 5)
    relay: Relay | None = None
    await runner.setup()
    try:
        # result sync (issue 5): sessions record results in the outbox; the relay ships them to NATS.
        if settings.sync.enabled:
            outbox = Outbox(settings.sync, settings.edge_id, registry=app[MANAGER_KEY].metrics.registry)
            await outbox.start()
            relay = Relay(settings.sync, outbox, settings.edge_id)
            await relay.start()
            app[MANAGER_KEY].results = outbox
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
        await stop.wait()
        log.info("edge stopping", sessions=app[MANAGER_KEY].count)
        app[MANAGER_KEY].drain()
    finally:
        if agent is not None:
            await agent.aclose()
        await runner.cleanup()
        if relay is not None:  # result sync (issue 5): sessions are closed, so flush the outbox last
            await relay.drain(settings.server.shutdown_grace_s)
            await relay.aclose()
        if outbox is not None:
            await outbox.aclose()
    log.info("edge stopped")
