"""``seminote-edge`` command line: one module per subcommand, each with ``register(subparsers)``.

Exit codes: 0 ok, 1 runtime error (one line on stderr), 2 usage error (argparse).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Subcommand modules under edge_node.cli, in the order --help lists them, with their one-line help.
COMMANDS: dict[str, str] = {
    "analyze": "run the streaming pipeline over an audio file and print its events",
    "serve": "run the edge daemon (WHIP ingest, live feedback, health and metrics)",
    "ticket": "mint a session ticket for a standalone edge (local use, tests, benchmarks)",
    "client": "stream an audio file to an edge in real time and print the events it sends back",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or (``only``) one whose other subcommands are listed but not imported.

    Importing a subcommand pulls in its dependencies (aiortc for ``serve``, ...); ``analyze``
    should not pay for them at start-up.
    """
    parser = argparse.ArgumentParser(
        prog="seminote-edge",
        description="Seminote edge node: live piano-practice analysis (WebRTC in, feedback events out).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        if only is None or name == only:
            importlib.import_module(f"{__name__}.{name}").register(sub)
        else:
            sub.add_parser(name, help=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(chosen if chosen in COMMANDS else None)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout closed early (e.g. piped into `head`): not an error of ours.
        sys.stderr.close()
        return 0
