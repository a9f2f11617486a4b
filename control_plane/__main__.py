"""``seminote-control serve``: the control-plane process (gRPC + JSON gateway).

Settings come from the environment (``SEMINOTE_CONTROL_*``) and an optional env file. Exit 0 on a
clean stop (SIGTERM/SIGINT), 1 on a runtime error, 2 on a usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from edge_node.envconfig import EXIT_CONFIG, SettingsInvalid, load_settings
from edge_node.sdnotify import PROTOCOL_ENV, Notifier, NotifyConfig

from .app import ControlPlane
from .errors import ConfigError
from .logs import configure_logging
from .metrics import MetricsServer, control_registry
from .settings import ControlSettings

log = structlog.get_logger("control_plane")

# Variables with our prefix that belong to other programs (seminotectl's address), not to settings.
OTHER_TOOLS_ENV = ("SEMINOTE_CONTROL_ADDR",)
STOP_MARGIN_S = 10.0  # systemd stop-timeout slack beyond the gRPC grace period


def service_status(cp: ControlPlane) -> str:
    """The STATUS= line: edges by state and routes so far."""
    if cp.registry is None or cp.dispatcher is None:
        return "starting"
    states: dict[str, int] = {}
    for e in cp.registry.edges.values():
        states[e.state.value] = states.get(e.state.value, 0) + 1
    edges = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no edges"
    return f"{edges}; {cp.dispatcher.counters.total} routes"


async def serve(settings: ControlSettings, notify: NotifyConfig | None = None) -> None:
    """Runs until SIGTERM/SIGINT, then shuts down in order. ``notify``: systemd ``Type=notify``
    (READY=1 once gRPC serves, STATUS= lines, WATCHDOG=1 from this loop, STOPPING=1 at shutdown)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        cp = await stack.enter_async_context(ControlPlane(settings))
        if settings.metrics.port is not None:
            await stack.enter_async_context(MetricsServer(settings.metrics, control_registry(cp)))
        notifier = await stack.enter_async_context(
            Notifier(notify or NotifyConfig(), status=lambda: service_status(cp)))
        # Long-lived start-up objects (protobuf descriptors, grpc, numpy) leave the GC's working set:
        # fewer and cheaper collections on the route path.
        gc.collect()
        gc.freeze()
        notifier.ready(service_status(cp))
        async with asyncio.TaskGroup() as tg:
            server_task = tg.create_task(cp.wait(), name="grpc-server")
            stop_task = tg.create_task(stop.wait(), name="stop-signal")
            await asyncio.wait({server_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            log.info("stopping")
            notifier.stopping("stopping: edges are told, in-flight calls finish")
            notifier.extend_timeout(settings.grpc.shutdown_grace_s + STOP_MARGIN_S)
            stop_task.cancel()
            await cp.aclose()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seminote-control", description="Seminote control plane.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser("serve", help="run the control plane (gRPC + JSON route gateway)")
    p.add_argument("--env-file", type=Path, default=None, help="read SEMINOTE_CONTROL_* settings from this file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # service lifecycle (issue 8): the systemd protocol's variables are read here, once, and removed.
    notify = NotifyConfig.from_environ(os.environ)
    for name in PROTOCOL_ENV:
        os.environ.pop(name, None)
    try:
        settings, warnings = load_settings(ControlSettings, args.env_file, os.environ, OTHER_TOOLS_ENV)
    except SettingsInvalid as exc:
        for line in exc.lines:
            print(f"seminote-control: invalid settings: {line}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_format, settings.log_level)
    for line in warnings:
        log.warning(line)
    try:
        asyncio.run(serve(settings, notify))
    except ConfigError as exc:
        print(f"seminote-control: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
