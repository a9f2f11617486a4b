"""``seminotectl route``: ask the router for an edge, as an app would (prints the ticket)."""

from __future__ import annotations

import argparse

from .._proto.seminote.v1 import router_pb2
from .common import EXIT_USAGE, Context, CtlError, leaf, mode_name, print_json, print_pairs, to_dict


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = leaf(sub, "route", help="route a session: edge, mode, ticket and alternates")
    p.add_argument("--user", required=True)
    p.add_argument("--lat", type=float)
    p.add_argument("--lon", type=float)
    p.add_argument("--region", default="")
    p.add_argument("--tempo", type=float, default=0.0, help="expected tempo in BPM (0: unknown)")
    p.add_argument("--piece", default="")
    p.add_argument("--prefer-detailed", action="store_true")
    p.add_argument("--alternate-tickets", action="store_true", help="sign a ticket for each alternate too")
    p.add_argument("--rtt", action="append", default=[], metavar="EDGE=MS", help="a measured RTT (repeatable)")
    p.set_defaults(func=cmd_route)


def cmd_route(args: argparse.Namespace, ctx: Context) -> int:
    if (args.lat is None) != (args.lon is None):
        raise CtlError("--lat and --lon go together", EXIT_USAGE)
    request = router_pb2.RouteRequest(user=args.user, region=args.region, tempo_bpm=args.tempo, piece=args.piece,
                                      prefer_detailed=args.prefer_detailed,
                                      alternate_tickets=args.alternate_tickets)
    if args.lat is not None:
        request.has_location, request.lat, request.lon = True, args.lat, args.lon
    for item in args.rtt:
        edge_id, sep, ms = item.partition("=")
        try:
            request.rtts.add(edge_id=edge_id, rtt_ms=float(ms))
        except ValueError:
            raise CtlError(f"--rtt {item!r}: expected EDGE=MILLISECONDS", EXIT_USAGE) from None
        if not sep or not edge_id:
            raise CtlError(f"--rtt {item!r}: expected EDGE=MILLISECONDS", EXIT_USAGE)
    reply = ctx.call(ctx.router.Route, request)
    if ctx.output == "json":
        data = to_dict(reply)
        data["mode"] = mode_name(reply.mode)
        print_json(data)
        return 0
    print_pairs({
        "session": reply.session_id, "mode": mode_name(reply.mode), "edge": reply.edge_id or "-",
        "region": reply.region or "-", "whip_url": reply.whip_url or "-", "rtt_ms": f"{reply.rtt_ms:.1f}",
        "reason": reply.reason, "alternates": ", ".join(a.edge_id for a in reply.alternates) or "-",
        "ticket": reply.ticket or "-",
    })
    return 0
