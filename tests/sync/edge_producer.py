"""A stand-in edge process for the sync tests: sessions that emit results at a steady rate.

It runs the real :class:`edge_node.relay_process.ResultSync` exactly as the edge daemon does (the
outbox in this process, the relay in a child process of it); only the sessions are synthetic, so the
tests know every result that must arrive.
Session ``s0000``..: result j has seq 2j+1 (``note`` for even j, ``score`` for odd j) and is preceded
by an unsynced ``pitch`` event with seq 2j, which the outbox must leave out. After its last result a
session records its summary.

Restarted after a SIGKILL, it resumes every session after the last result its outbox recorded (what
it held only in memory died with it, like a real session's unrecorded audio), and a new relay process
publishes what the outbox still holds (the old one exits when its parent dies). It exits 0 once
everything is produced and the outbox is empty.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path

from edge_node.events import Event
from edge_node.logs import configure_logging
from edge_node.relay_process import ResultSync
from edge_node.settings import SyncSettings

TICK_S = 0.02  # one audio chunk


def session_name(i: int) -> str:
    return f"s{i:04d}"


def events_for(j: int) -> list[Event]:
    t = round(j * 0.05, 6)
    pitch: Event = {"type": "pitch", "seq": 2 * j, "t": t, "f0_hz": 440.0, "midi": 69.0, "confidence": 0.9}
    if j % 2 == 0:
        result: Event = {"type": "note", "seq": 2 * j + 1, "t": t, "note_id": j // 2, "pitch": 60 + j % 12,
                         "velocity": 64, "end": None, "confidence": 0.9, "source": "kernel"}
    else:
        result = {"type": "score", "seq": 2 * j + 1, "t": t, "ref_index": j // 2, "expected_pitch": 60,
                  "played_pitch": 60 + (j % 3 == 0), "verdict": "correct" if j % 3 else "wrong_pitch",
                  "timing_ms": float(j % 7 - 3), "velocity_delta": 0}
    return [pitch, result]


async def run(args: argparse.Namespace) -> int:
    settings = SyncSettings(
        outbox_path=args.outbox, nats_urls=args.nats, batch_max_results=args.batch,
        flush_interval_ms=args.flush_ms, backoff_max_s=1.0, publish_timeout_s=1.0,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with ResultSync(settings, args.edge_id) as sync:
        outbox = sync.outbox
        print(f"producer started, relay pid {sync.relay.pid}", flush=True)
        next_j: list[int] = []
        for i in range(args.sessions):
            record = await outbox.session(session_name(i))
            next_j.append(0 if record is None else (record.last_seq + 1) // 2)
            if record is not None and record.has_summary:
                next_j[-1] = args.results + 1  # finished before the restart
        per_tick = max(1, round(args.rate * TICK_S))
        session = 0
        next_tick = time.monotonic()
        while not stop.is_set() and any(j <= args.results for j in next_j):
            for _ in range(per_tick):
                # Round-robin over unfinished sessions, one result each, like concurrent live sessions.
                for _ in range(args.sessions):
                    if next_j[session] <= args.results:
                        break
                    session = (session + 1) % args.sessions
                j = next_j[session]
                if j > args.results:
                    break  # every session finished
                sid = session_name(session)
                if j < args.results:
                    outbox.record_events(sid, f"user{session % args.users}", events_for(j))
                elif j == args.results:
                    outbox.record_summary(sid, f"user{session % args.users}", {
                        "type": "summary", "seq": 2 * j, "t": j * 0.05, "pitch_accuracy": 0.9,
                        "rhythm_accuracy": 0.8, "dynamics_range": 20.0, "overall_score": 85.0,
                        "notes_played": j // 2, "duration_s": j * 0.05})
                next_j[session] = j + 1
                session = (session + 1) % args.sessions
            next_tick += TICK_S
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
        await outbox.flush()
        while True:  # until the relay has published everything (or SIGTERM)
            if stop.is_set() or not await outbox.refresh_rows():
                break
            await asyncio.sleep(0.05)
        print(f"producer done, outbox rows left {outbox.rows}, relay restarts {sync.relay.restarts}", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--outbox", type=Path, required=True)
    parser.add_argument("--nats", action="append", required=True)
    parser.add_argument("--edge-id", default="edge-t1")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--results", type=int, default=500, help="results per session")
    parser.add_argument("--rate", type=float, default=2000.0, help="results per second, all sessions")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--flush-ms", type=float, default=100.0)
    configure_logging("json")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
