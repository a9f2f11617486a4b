"""``seminote-edge`` command line: one module per subcommand, each with ``register(subparsers)``.

Exit codes: 0 ok, 1 runtime error (one line on stderr), 2 usage error (argparse).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Subcommand modules under edge_node.cli, in the order --help lists them.
COMMANDS: tuple[str, ...] = ("analyze", "serve", "ticket", "client")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seminote-edge",
        description="Seminote edge node: live piano-practice analysis (WebRTC in, feedback events out).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout closed early (e.g. piped into `head`): not an error of ours.
        sys.stderr.close()
        return 0
