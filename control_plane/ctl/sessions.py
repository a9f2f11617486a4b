"""``seminotectl sessions list``."""

from __future__ import annotations

import argparse

from .._proto.seminote.v1 import fleet_pb2
from .common import Context, ago, leaf, mode_name, print_json, print_table, to_dict
from .progress import add_sessions_show

STATES = ("routed", "active", "ended", "expired")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sessions", help="practice sessions")
    cmds = p.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    c = leaf(cmds, "list", help="sessions routed or active (or --state)")
    c.add_argument("--edge", default="", help="only this edge")
    c.add_argument("--state", default="", choices=("", *STATES), help="only this state")
    c.add_argument("--limit", type=int, default=100, help="at most this many (newest first)")
    c.set_defaults(func=cmd_list)
    add_sessions_show(cmds)  # `sessions show ID` (result sync, issue 5)


def cmd_list(args: argparse.Namespace, ctx: Context) -> int:
    reply = ctx.call(ctx.fleet.ListSessions, fleet_pb2.ListSessionsRequest(
        edge_id=args.edge, state=args.state, limit=max(1, args.limit)))
    if ctx.output == "json":
        rows = []
        for s in reply.sessions:
            d = to_dict(s)
            d["mode"] = mode_name(s.mode)
            rows.append(d)
        print_json({"sessions": rows})
        return 0
    print_table(["SESSION", "USER", "EDGE", "MODE", "STATE", "PIECE", "ROUTED"],
                [[s.session_id, s.user or "-", s.edge_id or "-", mode_name(s.mode), s.state, s.piece or "-",
                  ago(s.routed_at) + " ago"] for s in reply.sessions])
    return 0
