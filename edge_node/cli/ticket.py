"""``seminote-edge ticket``: mint a session ticket with the key the edge's settings name.

For a standalone edge (no control plane): local use, tests and benchmarks. Prints the token alone on
stdout, so ``T=$(seminote-edge ticket)`` works.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

from ..errors import SeminoteEdgeError
from ..settings import EdgeSettings
from ..tickets import ANY_EDGE, TicketClaims, load_private_key, mint_ticket

DEFAULT_TTL_S = 300.0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "ticket",
        help="print a session ticket for a standalone edge (signed with server.ticket_private_key)",
        description="Mints a single-use session ticket signed with SEMINOTE_EDGE_SERVER__TICKET_PRIVATE_KEY.",
    )
    p.add_argument("--ttl", type=float, default=DEFAULT_TTL_S, metavar="SECONDS",
                   help=f"lifetime in seconds (default {DEFAULT_TTL_S:.0f})")
    p.add_argument("--user", default="local", help="user the ticket is for (default local)")
    p.add_argument("--session-id", help="session id (default: a fresh random one)")
    p.add_argument("--edge-id", help=f"edge it is valid on (default: this edge's edge_id; {ANY_EDGE!r}: any)")
    p.add_argument("--mode", choices=("light", "detailed"), help="analysis mode to start in")
    p.add_argument("--piece", help="reference piece id")
    p.add_argument("--env-file", help="read settings from this env file too")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = EdgeSettings(_env_file=args.env_file) if args.env_file else EdgeSettings()
        key_ref = settings.server.ticket_private_key
        if not key_ref:
            raise SeminoteEdgeError(
                "no signing key: set SEMINOTE_EDGE_SERVER__TICKET_PRIVATE_KEY (PEM text or a file path)"
            )
        if args.ttl <= 0:
            raise SeminoteEdgeError("--ttl must be positive")
        key = load_private_key(key_ref)
        now = time.time()
        claims = TicketClaims(
            session_id=args.session_id or f"s-{uuid.uuid4().hex[:16]}", user=args.user,
            edge_id=args.edge_id or settings.edge_id, iat=now, exp=now + args.ttl,
            piece=args.piece, mode=args.mode,
        )
        token = mint_ticket(key, claims)
    except (SeminoteEdgeError, ValueError) as exc:
        print(f"seminote-edge ticket: error: {exc}", file=sys.stderr)
        return 1
    print(token)
    return 0
