"""``seminote-edge client``: stream an audio file to an edge in real time and print its events."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from urllib.parse import urljoin

import aiohttp

from ..client import FileAudioTrack, PracticeClient, ReceivedEvent, fetch_dev_ticket
from ..errors import SeminoteEdgeError
from ..events import to_json


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "client",
        help="stream an audio file to an edge in real time and print the feedback events",
        description=(
            "Streams AUDIO (any format PyAV reads) to the edge at --whip as a live practice session "
            "would, and prints each feedback event as one JSON line when it arrives."
        ),
    )
    p.add_argument("audio", metavar="AUDIO", type=Path, help="audio file to play to the edge")
    p.add_argument("--whip", required=True, metavar="URL", help="the edge's WHIP endpoint, e.g. http://127.0.0.1:8080/v1/whip")
    p.add_argument("--ticket", metavar="T", help="session ticket (default: ask the edge's /v1/dev/ticket)")
    p.add_argument("--mode", choices=("light", "detailed"), help="switch to this analysis mode first")
    p.add_argument("--tail", type=float, default=1.0, metavar="SECONDS",
                   help="silence streamed after the audio before stopping (default 1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except SeminoteEdgeError as exc:
        print(f"seminote-edge client: error: {exc}", file=sys.stderr)
        return 1
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        print(f"seminote-edge client: error: cannot reach the edge: {exc or type(exc).__name__}", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace) -> int:
    ticket = args.ticket
    if ticket is None:
        ticket = (await fetch_dev_ticket(urljoin(args.whip, "/")))["ticket"]
    out = sys.stdout

    def show(rec: ReceivedEvent) -> None:
        out.write(to_json(rec.event))
        out.write("\n")
        out.flush()

    track = FileAudioTrack(args.audio, tail_s=args.tail)
    async with PracticeClient(args.whip, ticket, track, on_event=show) as client:
        if args.mode:
            await client.send_control({"type": "set_mode", "mode": args.mode})
        await client.stream()
    return 0
