"""``seminotectl edges list|show|cordon|uncordon|drain``."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from .._proto.seminote.v1 import edge_pb2, fleet_pb2
from .common import (
    EXIT_ERROR,
    Context,
    CtlError,
    ago,
    confirm,
    leaf,
    print_json,
    print_pairs,
    print_table,
    state_name,
    to_dict,
)

DRAIN_POLL_S = 0.5
DRAIN_GRACE_S = 5.0  # after the deadline, how long to wait for the edge to report it is empty


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("edges", help="list, inspect, cordon, uncordon and drain edges")
    cmds = p.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    c = leaf(cmds, "list", help="every known edge")
    c.add_argument("--region", default="", help="only this region")
    c.set_defaults(func=cmd_list)
    c = leaf(cmds, "show", help="one edge in detail")
    c.add_argument("edge_id")
    c.set_defaults(func=cmd_show)
    c = leaf(cmds, "cordon", help="stop routing new sessions to an edge (its sessions continue)")
    c.add_argument("edge_id")
    c.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    c.set_defaults(func=cmd_cordon)
    c = leaf(cmds, "uncordon", help="route new sessions to an edge again")
    c.add_argument("edge_id")
    c.set_defaults(func=cmd_uncordon)
    c = leaf(cmds, "drain", help="cordon and end an edge's sessions by a deadline; waits unless --detach")
    c.add_argument("edge_id")
    c.add_argument("--timeout", dest="drain_timeout_s", type=float, default=0.0,
                   help="seconds the sessions get to finish (default: the control plane's)")
    c.add_argument("--detach", action="store_true", help="return at once instead of showing progress")
    c.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    c.set_defaults(func=cmd_drain)


def edge_row(e: edge_pb2.Edge, now: float) -> list[Any]:
    sessions = e.load.sessions_light + e.load.sessions_detailed
    model = "yes" if e.capabilities.model_loaded else ("no" if e.capabilities.detailed_mode else "-")
    return [e.edge_id, e.region, state_name(e.state), f"{sessions}/{e.capacity}", e.pending_sessions,
            f"{e.load.cpu_percent:.0f}%", f"{e.load.latency_p99_ms:.1f}", model, ago(e.last_report_at, now)]


EDGE_HEADERS = ["EDGE", "REGION", "STATE", "SESSIONS", "PENDING", "CPU", "P99_MS", "MODEL", "LAST_REPORT"]


def show_edge(ctx: Context, e: edge_pb2.Edge) -> None:
    if ctx.output == "json":
        data = to_dict(e)
        data["state"] = state_name(e.state)
        print_json(data)
        return
    print_pairs({
        "edge": e.edge_id, "region": e.region, "state": state_name(e.state), "location": f"{e.lat:.4f}, {e.lon:.4f}",
        "whip_url": e.whip_url, "capacity": e.capacity,
        "sessions": f"{e.load.sessions_light} light, {e.load.sessions_detailed} detailed",
        "pending": e.pending_sessions, "accepting": e.load.accepting, "cpu": f"{e.load.cpu_percent:.1f}%",
        "latency_p99_ms": f"{e.load.latency_p99_ms:.1f}", "outbox_depth": e.load.outbox_depth,
        "detailed_mode": e.capabilities.detailed_mode, "model_loaded": e.capabilities.model_loaded,
        "cordoned": e.cordoned,
        "drain_deadline": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e.drain_deadline)) if e.drain_deadline else "-",
        "registered": ago(e.registered_at) + " ago", "last_report": ago(e.last_report_at) + " ago",
        "version": e.version or "-",
    })


def cmd_list(args: argparse.Namespace, ctx: Context) -> int:
    reply = ctx.call(ctx.fleet.ListEdges, fleet_pb2.ListEdgesRequest(region=args.region))
    if ctx.output == "json":
        edges = []
        for e in reply.edges:
            d = to_dict(e)
            d["state"] = state_name(e.state)
            edges.append(d)
        print_json({"edges": edges})
    else:
        now = time.time()
        print_table(EDGE_HEADERS, [edge_row(e, now) for e in reply.edges])
    return 0


def cmd_show(args: argparse.Namespace, ctx: Context) -> int:
    show_edge(ctx, ctx.call(ctx.fleet.GetEdge, fleet_pb2.GetEdgeRequest(edge_id=args.edge_id)))
    return 0


def cmd_cordon(args: argparse.Namespace, ctx: Context) -> int:
    confirm(args, f"cordon edge {args.edge_id!r} (no new sessions)?")
    show_edge(ctx, ctx.call(ctx.fleet.CordonEdge, fleet_pb2.EdgeRequest(edge_id=args.edge_id)))
    return 0


def cmd_uncordon(args: argparse.Namespace, ctx: Context) -> int:
    show_edge(ctx, ctx.call(ctx.fleet.UncordonEdge, fleet_pb2.EdgeRequest(edge_id=args.edge_id)))
    return 0


def cmd_drain(args: argparse.Namespace, ctx: Context) -> int:
    if args.drain_timeout_s < 0:
        raise CtlError("--timeout must be >= 0", 2)
    confirm(args, f"drain edge {args.edge_id!r} (its sessions end by the deadline)?")
    edge = ctx.call(ctx.fleet.DrainEdge, fleet_pb2.DrainEdgeRequest(edge_id=args.edge_id,
                                                                    timeout_s=args.drain_timeout_s))
    if args.detach:
        show_edge(ctx, edge)
        return 0
    while edge.state == edge_pb2.EDGE_STATE_DRAINING:
        left = edge.load.sessions_light + edge.load.sessions_detailed
        remaining_s = edge.drain_deadline - time.time()
        print(f"draining {edge.edge_id}: {left} session(s) left, deadline in {max(0.0, remaining_s):.0f}s",
              file=sys.stderr, flush=True)
        if remaining_s < -DRAIN_GRACE_S:
            raise CtlError(f"edge {edge.edge_id!r} did not finish draining by its deadline", EXIT_ERROR)
        time.sleep(DRAIN_POLL_S)
        edge = ctx.call(ctx.fleet.GetEdge, fleet_pb2.GetEdgeRequest(edge_id=args.edge_id))
    if edge.state != edge_pb2.EDGE_STATE_DRAINED:
        raise CtlError(f"edge {edge.edge_id!r} is {state_name(edge.state)}, not drained", EXIT_ERROR)
    print(f"drained {edge.edge_id}", file=sys.stderr)
    show_edge(ctx, edge)
    return 0
