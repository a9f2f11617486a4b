"""``seminotectl stats``: fleet totals and per-region capacity."""

from __future__ import annotations

import argparse

from .._proto.seminote.v1 import fleet_pb2
from .common import Context, leaf, print_json, print_pairs, print_table, to_dict


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = leaf(sub, "stats", help="fleet totals and per-region capacity")
    p.set_defaults(func=cmd_stats)


def cmd_stats(args: argparse.Namespace, ctx: Context) -> int:
    s = ctx.call(ctx.fleet.GetStats, fleet_pb2.GetStatsRequest())
    if ctx.output == "json":
        data = to_dict(s)
        for key in ("routes_total", "routes_exhausted", "routes_on_device"):
            data[key] = int(data[key])  # proto3 JSON writes 64-bit integers as strings
        print_json(data)
        return 0
    print_pairs({
        "edges": f"{s.edges} ({s.serving} serving)", "capacity": s.capacity, "sessions": s.sessions,
        "pending": s.pending, "routes": f"{s.routes_total} ({s.routes_on_device} on device, "
                                         f"{s.routes_exhausted} no capacity)",
        "uptime_s": f"{s.uptime_s:.0f}",
    })
    print()
    print_table(["REGION", "EDGES", "SERVING", "CAPACITY", "SESSIONS"],
                [[r.region, r.edges, r.serving, r.capacity, r.sessions] for r in s.regions])
    return 0
