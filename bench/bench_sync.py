"""Result sync throughput (edge outbox → NATS JetStream → progress store) and progress query latency.

Three measurements, each against real components (a ``nats-server -js`` on a free port with its own
store dir, the ingest as its own process, the edge's real outbox and relay in this process):

``backlog``
    ``--backlog`` results (default 100,000) from ``--sessions`` sessions already in the outbox, in
    rows of ``--results-per-row`` (what 200 ms flushes of live sessions produce); then the relay
    starts. Results/s = backlog / (time until the last one is in the progress store).
``sustained``
    Sessions record results at ``--rate`` results/s for ``--duration-s`` with the outbox's normal
    flushing; reports the rate that reached the store over the run and the lag at the end.
``audio``
    Live-session feedback latency from ``bench/bench_latency.py`` (the edge as its own process, real
    WebRTC clients), alternately with sync off and with sync on while the relay catches up an outbox
    backlog of ``--audio-backlog-rows`` rows (default 100,000). nats-server and the ingest run at
    ``--audio-cloud-nice`` (19): in production they are on other machines, here they share two cores.
``query``
    A progress store holding ``--query-results`` results (default 1,000,000), of which one user has
    ``--user-sessions`` sessions (default 1,000); ``GetProgress`` for that user over real gRPC
    (sessions with scores + weekly trends), ``--queries`` times: p50/p95/max.

    python bench/bench_sync.py                 # all three → bench/results/sync.json
    python bench/bench_sync.py --only query
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import nats
import nats.js.errors

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from control_plane._proto.seminote.v1 import progress_pb2, progress_pb2_grpc  # noqa: E402
from control_plane.progress_service import ProgressService  # noqa: E402
from control_plane.progress_store import ProgressStore, ResultMessage  # noqa: E402
from edge_node.events import Event  # noqa: E402
from edge_node.outbox import Outbox  # noqa: E402
from edge_node.relay_process import ResultSync  # noqa: E402
from edge_node.settings import SyncSettings  # noqa: E402

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
TARGET_RESULTS_PER_S = 5_000
TARGET_QUERY_P95_MS = 50.0
POLL_S = 0.05
STREAM = "SEMINOTE_RESULTS"
WEEK_S = 7 * 86400.0
RESULTS_PER_MESSAGE_FILL = 100  # progress-store fill for the query benchmark


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def result_event(seq: int) -> Event:
    if seq % 2:
        return {"type": "note", "seq": seq, "t": seq * 0.05, "note_id": seq // 2, "pitch": 60 + seq % 12,
                "velocity": 64, "end": None, "confidence": 0.9, "source": "kernel"}
    return {"type": "score", "seq": seq, "t": seq * 0.05, "ref_index": seq // 2, "expected_pitch": 60,
            "played_pitch": 60, "verdict": "correct", "timing_ms": 4.0, "velocity_delta": 0}


class Cloud:
    """nats-server + the ingest worker process, in a temp dir; both killed at the end."""

    def __init__(self, root: Path, nice: int = 0) -> None:
        self.root = root
        self.nice = ["nice", "-n", str(nice)] if nice else []
        self.port = free_port()
        self.db = root / "progress.db"
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        (self.root / "js").mkdir(parents=True, exist_ok=True)
        log = (self.root / "nats.log").open("wb")
        self.procs.append(subprocess.Popen(
            [*self.nice, NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.root / "js")],
            stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        ingest_log = (self.root / "ingest.log").open("wb")
        self.procs.append(subprocess.Popen(
            [*self.nice, sys.executable, "-m", "control_plane.ingest", "--nats", self.url, "--db", str(self.db)],
            stdout=ingest_log, stderr=subprocess.STDOUT, cwd=ROOT))

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Until the ingest has created the results stream (so the clock measures sync, not start-up)."""
        nc = await nats.connect(self.url, connect_timeout=2)
        try:
            js = nc.jetstream()
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    await js.stream_info(STREAM)
                    return
                except nats.js.errors.NotFoundError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(POLL_S)
        finally:
            await nc.close()

    def stored(self) -> int:
        if not self.db.exists():
            return 0
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM performances").fetchone()[0])
        except sqlite3.OperationalError:
            return 0
        finally:
            conn.close()

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


async def wait_stored(cloud: Cloud, want: int, timeout_s: float) -> float:
    """Seconds until ``want`` results are stored (raises on timeout)."""
    start = time.monotonic()
    while cloud.stored() < want:
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"only {cloud.stored()} of {want} results stored after {timeout_s}s")
        await asyncio.sleep(POLL_S)
    return time.monotonic() - start


def relay_pace(args: argparse.Namespace) -> dict[str, float]:
    return {} if args.relay_max_rows_per_s is None else {"relay_max_rows_per_s": args.relay_max_rows_per_s}


async def bench_backlog(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    cloud = Cloud(tmp / "backlog")
    settings = SyncSettings(enabled=True, outbox_path=tmp / "backlog-outbox.db", nats_urls=[cloud.url],
                            flush_interval_ms=60_000, outbox_max_rows=10_000_000, **relay_pace(args))
    per_session = args.backlog // args.sessions
    total = per_session * args.sessions
    async with Outbox(settings, "bench-edge") as outbox:
        seq = 0
        while seq < per_session:
            chunk = min(args.results_per_row, per_session - seq)
            for s in range(args.sessions):
                outbox.record_events(f"b{s:04d}", f"u{s % 50}", [result_event(2 * (seq + k) + 1) for k in range(chunk)])
            await outbox.flush()
            seq += chunk
        rows = outbox.rows
    cloud.start()
    try:
        await cloud.wait_ready()  # ingest up and topology created before the clock starts
        start = time.monotonic()
        async with ResultSync(settings, "bench-edge") as sync:  # the relay process, as the edge runs it
            relay_s: float | None = None
            while cloud.stored() < total:
                if relay_s is None and await sync.outbox.refresh_rows() == 0:
                    relay_s = time.monotonic() - start
                if time.monotonic() - start > args.timeout_s:
                    raise TimeoutError(f"backlog: {cloud.stored()} of {total} stored")
                await asyncio.sleep(POLL_S)
            elapsed = time.monotonic() - start
    finally:
        cloud.stop()
    return {
        "results": total, "rows": rows, "results_per_row": args.results_per_row, "sessions": args.sessions,
        "seconds": round(elapsed, 3), "results_per_s": round(total / elapsed),
        "relay_drain_seconds": round(relay_s or elapsed, 3),
        "meets_target": total / elapsed >= TARGET_RESULTS_PER_S,
    }


async def bench_sustained(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    cloud = Cloud(tmp / "sustained")
    settings = SyncSettings(enabled=True, outbox_path=tmp / "sustained-outbox.db", nats_urls=[cloud.url],
                            flush_interval_ms=200, **relay_pace(args))
    cloud.start()
    tick_s = 0.02
    per_tick = args.rate * tick_s
    try:
        await cloud.wait_ready()
        async with ResultSync(settings, "bench-edge") as sync:
            outbox = sync.outbox
            produced = 0
            owed = 0.0
            next_seq = [1] * args.sessions
            session = 0
            start = time.monotonic()
            next_tick = start
            while time.monotonic() - start < args.duration_s:
                owed += per_tick
                while owed >= 1:
                    s = session % args.sessions
                    outbox.record_events(f"r{s:04d}", f"u{s % 50}", [result_event(next_seq[s])])
                    next_seq[s] += 2
                    produced += 1
                    owed -= 1
                    session += 1
                next_tick += tick_s
                await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
            produce_s = time.monotonic() - start
            stored_at_end = cloud.stored()
            catch_up_s = await wait_stored(cloud, produced, args.timeout_s)
    finally:
        cloud.stop()
    total_s = produce_s + catch_up_s
    return {
        "target_rate_per_s": args.rate, "produced": produced, "produce_seconds": round(produce_s, 3),
        "stored_when_production_stopped": stored_at_end, "lag_at_end_results": produced - stored_at_end,
        "catch_up_seconds": round(catch_up_s, 3), "results_per_s": round(produced / total_s),
        "meets_target": produced / total_s >= TARGET_RESULTS_PER_S,
    }


async def fill_store(store: ProgressStore, args: argparse.Namespace) -> dict[str, Any]:
    """``query_results`` results in sessions of ``results_per_session``; user ``target`` owns
    ``user_sessions`` of them spread over a year, every other user 10; every session has a summary."""
    per_session = args.query_results // (args.user_sessions * 10)
    sessions_total = args.query_results // per_session
    year_start = time.time() - 52 * WEEK_S
    batch: list[ResultMessage] = []
    start = time.monotonic()
    for n in range(sessions_total):
        mine = n % 10 == 0 and n // 10 < args.user_sessions
        user = "target" if mine else f"user{n % 997}"
        sid = f"q{n:07d}"
        started = year_start + (n / sessions_total) * 52 * WEEK_S
        for first in range(0, per_session, RESULTS_PER_MESSAGE_FILL):
            events = tuple(result_event(2 * k + 1) for k in range(first, min(per_session, first + RESULTS_PER_MESSAGE_FILL)))
            batch.append(ResultMessage(f"fill.{n}.{first}", "seminote.results.fill.events", "fill", sid, user,
                                       started, "events", events))
        batch.append(ResultMessage(f"fill.{n}.s", "seminote.results.fill.summary", "fill", sid, user, started,
                                   "summary", summary={"type": "summary", "seq": 2 * per_session,
                                                       "t": 60.0, "pitch_accuracy": 0.5 + (n % 50) / 100,
                                                       "rhythm_accuracy": 0.6, "dynamics_range": 18.0,
                                                       "overall_score": 50 + n % 50, "notes_played": per_session // 2,
                                                       "duration_s": 300.0}))
        if len(batch) >= 500:
            await store.apply(batch)
            batch = []
    if batch:
        await store.apply(batch)
    return {"results": await store.count("performances"), "sessions": sessions_total,
            "target_user_sessions": len(await store.sessions("target", limit=10_000)),
            "fill_seconds": round(time.monotonic() - start, 1)}


async def bench_query(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    async with ProgressStore(tmp / "query.db") as store:
        filled = await fill_store(store, args)
        server = grpc.aio.server()
        progress_pb2_grpc.add_ProgressServicer_to_server(ProgressService(store), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = progress_pb2_grpc.ProgressStub(channel)
                request = progress_pb2.ProgressRequest(user_id="target")
                await stub.GetProgress(request)  # warm-up
                times_ms: list[float] = []
                sessions_returned = weeks_returned = 0
                for _ in range(args.queries):
                    t0 = time.perf_counter()
                    reply = await stub.GetProgress(request)
                    times_ms.append((time.perf_counter() - t0) * 1000)
                    sessions_returned, weeks_returned = len(reply.sessions), len(reply.weeks)
                detail_ms: list[float] = []
                for n in range(0, min(args.queries, 100)):
                    t0 = time.perf_counter()
                    await stub.GetSessionDetail(progress_pb2.SessionDetailRequest(session_id=f"q{n * 10:07d}"))
                    detail_ms.append((time.perf_counter() - t0) * 1000)
        finally:
            await server.stop(0)
    times_ms.sort()
    detail_ms.sort()
    p95 = times_ms[int(0.95 * (len(times_ms) - 1))]
    return {
        **filled, "queries": len(times_ms), "sessions_returned": sessions_returned, "weeks_returned": weeks_returned,
        "p50_ms": round(statistics.median(times_ms), 2), "p95_ms": round(p95, 2), "max_ms": round(times_ms[-1], 2),
        "session_detail_p95_ms": round(detail_ms[int(0.95 * (len(detail_ms) - 1))], 2),
        "meets_target": p95 <= TARGET_QUERY_P95_MS,
    }


async def prefill_outbox(path: Path, rows: int, results_per_row: int, sessions: int) -> int:
    """An outbox file holding ``rows`` rows of ``results_per_row`` results (a relay backlog)."""
    settings = SyncSettings(outbox_path=path, flush_interval_ms=60_000, outbox_max_rows=10 * rows,
                            batch_max_results=results_per_row)
    async with Outbox(settings, "edge-bench") as outbox:
        seq = 1
        while outbox.rows < rows:
            for s in range(min(sessions, rows - outbox.rows)):
                outbox.record_events(f"bk{s:04d}", f"u{s % 50}",
                                     [result_event(seq + 2 * k) for k in range(results_per_row)])
            seq += 2 * results_per_row
            await outbox.flush()
        return outbox.rows


def outbox_rows(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
    finally:
        conn.close()


def latency_run(out: Path, sessions: int, extra_env: dict[str, str]) -> dict[str, Any]:
    """``bench/bench_latency.py`` (the edge's own latency benchmark, edge as a subprocess) once."""
    env = {**os.environ, **extra_env}
    subprocess.run([sys.executable, str(ROOT / "bench" / "bench_latency.py"), "--sessions", str(sessions),
                    "--out", str(out)], env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                   timeout=600)
    data = json.loads(out.read_text())
    runs = data.get("runs", data) if isinstance(data, dict) else data
    first = runs[0] if isinstance(runs, list) else runs
    return {"latency_ms": first["latency_ms"], "edge_internal_ms": first["edge_internal_ms"],
            "completed_sessions": first["completed_sessions"], "wall_s": first["wall_s"]}


def _median_of(runs: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(r["latency_ms"][key] for r in runs), 2)


async def bench_audio(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Feedback latency of live sessions without sync and while the relay drains a backlog, in
    alternating runs (this machine is shared, so one pair of runs says little)."""
    cloud = Cloud(tmp / "audio", nice=args.audio_cloud_nice)
    outbox_path = tmp / "audio-outbox.db"
    rows = await prefill_outbox(outbox_path, args.audio_backlog_rows, args.results_per_row, args.sessions)
    sync_env = {"SEMINOTE_EDGE_SYNC__ENABLED": "true", "SEMINOTE_EDGE_SYNC__OUTBOX_PATH": str(outbox_path),
                "SEMINOTE_EDGE_SYNC__NATS_URLS": json.dumps([cloud.url])}
    baseline: list[dict[str, Any]] = []
    loaded: list[dict[str, Any]] = []
    relayed: list[int] = []
    left = rows
    cloud.start()
    try:
        await cloud.wait_ready()
        for i in range(args.audio_repeats):
            baseline.append(await asyncio.to_thread(latency_run, tmp / f"lat-base-{i}.json", args.audio_sessions, {}))
            before = cloud.stored()
            loaded.append(await asyncio.to_thread(latency_run, tmp / f"lat-backlog-{i}.json", args.audio_sessions,
                                                  sync_env))
            left = outbox_rows(outbox_path)
            relayed.append(cloud.stored() - before)
    finally:
        cloud.stop()
    return {
        "backlog_rows": rows, "backlog_results": rows * args.results_per_row, "sessions": args.audio_sessions,
        "repeats": args.audio_repeats, "cloud_nice": args.audio_cloud_nice, "rows_left_after_last_run": left,
        "results_relayed_per_loaded_run": relayed, "relay_busy_throughout": left > 0,
        "client_latency_ms_median_of_runs": {
            "without_sync": {k: _median_of(baseline, k) for k in ("p50", "p90", "p99")},
            "while_relay_catches_up": {k: _median_of(loaded, k) for k in ("p50", "p90", "p99")},
        },
        "without_sync": baseline, "while_relay_catches_up": loaded,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "benchmark": "result sync", "host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "targets": {"results_per_s": TARGET_RESULTS_PER_S, "progress_p95_ms": TARGET_QUERY_P95_MS},
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as d:
        tmp = Path(d)
        if args.only in (None, "backlog"):
            out["backlog"] = await bench_backlog(args, tmp)
            print("backlog", out["backlog"], flush=True)
        if args.only in (None, "sustained"):
            out["sustained"] = await bench_sustained(args, tmp)
            print("sustained", out["sustained"], flush=True)
        if args.only in (None, "audio"):
            out["audio"] = await bench_audio(args, tmp)
            print("audio", out["audio"], flush=True)
        if args.only in (None, "query"):
            out["query"] = await bench_query(args, tmp)
            print("query", out["query"], flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("backlog", "sustained", "audio", "query"), default=None)
    parser.add_argument("--audio-backlog-rows", type=int, default=100_000, help="audio: outbox rows to catch up")
    parser.add_argument("--audio-sessions", type=int, default=10, help="audio: live sessions measured")
    parser.add_argument("--audio-repeats", type=int, default=3, help="audio: runs of each condition, alternating")
    parser.add_argument("--audio-cloud-nice", type=int, default=19,
                        help="audio: nice level of nats-server and the ingest, which stand in for the control "
                        "plane's own machines (0: compete with the edge for this machine's CPU)")
    parser.add_argument("--backlog", type=int, default=100_000, help="results waiting in the outbox")
    parser.add_argument("--sessions", type=int, default=64, help="concurrent sessions on the edge")
    parser.add_argument("--results-per-row", type=int, default=8, help="results per outbox row in the backlog")
    parser.add_argument("--rate", type=float, default=6_000.0, help="sustained: results/s produced")
    parser.add_argument("--duration-s", type=float, default=20.0, help="sustained: production time")
    parser.add_argument("--relay-max-rows-per-s", type=float, default=None,
                        help="backlog/sustained: relay pace (default: the setting's default; 0: unpaced)")
    parser.add_argument("--query-results", type=int, default=1_000_000)
    parser.add_argument("--user-sessions", type=int, default=1_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--timeout-s", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sync.json")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.exists() and args.only:
        merged = json.loads(args.out.read_text())
        merged.update(result)
        result = merged
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
