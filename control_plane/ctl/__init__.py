"""``seminotectl``: the operator CLI over gRPC. One module per command group, each with ``register``.

Global options: ``--addr`` (or ``SEMINOTE_CONTROL_ADDR``), ``--token`` (or ``SEMINOTE_TOKEN``),
``-o table|json``. Exit codes: 0 ok, 1 error (one line on stderr), 2 usage.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

import grpc

from .common import EXIT_ERROR, EXIT_USAGE, Context, CtlError

DEFAULT_ADDR = "127.0.0.1:50051"
DEFAULT_TIMEOUT_S = 10.0
# Command-group modules under control_plane.ctl, in the order --help lists them.
COMMAND_GROUPS: list[str] = ["edges", "sessions", "route", "stats", "progress"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seminotectl", description="Operate a Seminote control plane.")
    parser.add_argument("--addr", default=os.environ.get("SEMINOTE_CONTROL_ADDR", DEFAULT_ADDR),
                        help="control plane gRPC address (env SEMINOTE_CONTROL_ADDR; default %(default)s)")
    parser.add_argument("--token", default=os.environ.get("SEMINOTE_TOKEN"),
                        help="admin token, or a client API key for `route` (env SEMINOTE_TOKEN)")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table", help="output format")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="per-call deadline in seconds")
    parser.add_argument("--tls-ca", default=None, help="CA certificate file: use TLS to the control plane")
    sub = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    for name in COMMAND_GROUPS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with Context.from_args(args) as ctx:
            return int(args.func(args, ctx) or 0)
    except CtlError as exc:
        print(f"seminotectl: {exc}", file=sys.stderr)
        return exc.exit_code
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        print(f"seminotectl: {code.name if code else 'ERROR'}: {details}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return 0


__all__ = ["COMMAND_GROUPS", "EXIT_USAGE", "build_parser", "main"]
