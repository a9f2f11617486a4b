"""``seminote-control serve``: the control-plane process (gRPC + JSON gateway).

Settings come from the environment (``SEMINOTE_CONTROL_*``) and an optional env file. Exit 0 on a
clean stop (SIGTERM/SIGINT), 1 on a runtime error, 2 on a usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog
from pydantic import ValidationError

from .app import ControlPlane
from .errors import ConfigError
from .logs import configure_logging
from .settings import ControlSettings

log = structlog.get_logger("control_plane")


async def serve(settings: ControlSettings) -> None:
    """Runs until SIGTERM/SIGINT, then shuts down in order."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with ControlPlane(settings) as cp, asyncio.TaskGroup() as tg:
        # Long-lived start-up objects (protobuf descriptors, grpc, numpy) leave the GC's working set:
        # fewer and cheaper collections on the route path.
        gc.collect()
        gc.freeze()
        server_task = tg.create_task(cp.wait(), name="grpc-server")
        stop_task = tg.create_task(stop.wait(), name="stop-signal")
        await asyncio.wait({server_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        log.info("stopping")
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
    try:
        settings = ControlSettings(_env_file=args.env_file) if args.env_file else ControlSettings()  # type: ignore[call-arg]
    except ValidationError as exc:
        print(f"seminote-control: invalid settings: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    try:
        asyncio.run(serve(settings))
    except ConfigError as exc:
        print(f"seminote-control: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
