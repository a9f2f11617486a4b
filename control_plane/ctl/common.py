"""What every ``seminotectl`` command group shares: the channel, credentials, output and confirmation."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from .._proto.seminote.v1 import edge_pb2, fleet_pb2_grpc, router_pb2_grpc

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def leaf(cmds: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help: str) -> argparse.ArgumentParser:
    """A subcommand parser that also takes ``-o`` after the command (``seminotectl edges list -o json``)."""
    p = cmds.add_parser(name, help=help)
    p.add_argument("-o", "--output", choices=("table", "json"), default=argparse.SUPPRESS, help="output format")
    return p


class CtlError(Exception):
    """A failure to report as one line; ``exit_code`` 1 (error) or 2 (usage)."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Context:
    """An open channel plus the caller's credentials and output format."""

    def __init__(self, addr: str, token: str | None, output: str, timeout_s: float, tls_ca: str | None) -> None:
        self.addr = addr
        self.token = token
        self.output = output
        self.timeout_s = timeout_s
        if tls_ca:
            try:
                with open(tls_ca, "rb") as f:
                    creds = grpc.ssl_channel_credentials(root_certificates=f.read())
            except OSError as exc:
                raise CtlError(f"cannot read --tls-ca {tls_ca}: {exc.strerror}", EXIT_USAGE) from exc
            self.channel = grpc.secure_channel(addr, creds)
        else:
            self.channel = grpc.insecure_channel(addr)
        self.fleet = fleet_pb2_grpc.FleetAdminStub(self.channel)
        self.router = router_pb2_grpc.RouterStub(self.channel)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Context:
        if args.timeout <= 0:
            raise CtlError("--timeout must be positive", EXIT_USAGE)
        return cls(args.addr, args.token, args.output, args.timeout, args.tls_ca)

    def __enter__(self) -> Context:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.channel.close()

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        if not self.token:
            raise CtlError("no token: pass --token or set SEMINOTE_TOKEN", EXIT_USAGE)
        return (("authorization", f"Bearer {self.token}"),)

    def call(self, method: Any, request: Message) -> Any:
        return method(request, metadata=self.metadata, timeout=self.timeout_s)


def to_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def state_name(value: int) -> str:
    return edge_pb2.EdgeState.Name(value).removeprefix("EDGE_STATE_").lower()  # type: ignore[arg-type]


def mode_name(value: int) -> str:
    return edge_pb2.Mode.Name(value).removeprefix("MODE_").lower()  # type: ignore[arg-type]


def ago(ts: float, now: float | None = None) -> str:
    if not ts:
        return "-"
    seconds = max(0.0, (now or time.time()) - ts)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def print_pairs(pairs: Mapping[str, Any]) -> None:
    width = max((len(k) for k in pairs), default=0)
    for key, value in pairs.items():
        print(f"{key.ljust(width)}  {value}")


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def confirm(args: argparse.Namespace, question: str) -> None:
    """Destructive commands need ``--yes``, or a ``y`` typed at a terminal."""
    if getattr(args, "yes", False):
        return
    if not sys.stdin.isatty():
        raise CtlError(f"{question}: refusing without --yes (not a terminal)", EXIT_USAGE)
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise CtlError("aborted", EXIT_ERROR)
