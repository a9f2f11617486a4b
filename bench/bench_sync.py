"""Result sync throughput (edge outbox → NATS JetStream → progress store), progress query latency, and
the audio path's feedback latency while the relay catches up a backlog.

Each against real components: a ``nats-server -js`` on a free port with its own store dir, the
ingest as its own process, the edge's real outbox and its relay process (:class:`ResultSync`, as
``seminote-edge serve`` runs them):

``backlog``
    ``--backlog`` results (default 100,000) from ``--sessions`` sessions already in the outbox, in
    rows of ``--results-per-row`` (what 200 ms flushes of live sessions produce); then the relay
    process starts. Results/s = backlog / (time until the last one is in the progress store).
``sustained``
    Sessions record results at ``--rate`` results/s for ``--duration-s`` with the outbox's normal
    flushing; reports the rate that reached the store over the run and the lag at the end.
``audio``
    Onset-to-feedback latency measured by real WebRTC clients (``bench_latency.py``'s worker) of
    ``--audio-sessions`` live sessions on ``seminote-edge serve`` (its own process), each playing a
    piece of ``--audio-notes`` notes (bench_latency's piece, longer, so a run has sessions x notes
    onsets and its p99 is not decided by two or three samples). Runs alternate (AB BA AB ...) between
    sync off and sync on with a fresh ``--audio-backlog-rows`` (100,000) row backlog that the relay process
    drains during the whole run; before each run the ingest has caught up with the previous one.
    Noise = the spread (max - min) of p99 over the runs without sync; the criterion is |median p99
    with the backlog - median p99 without| <= noise. nats-server and the ingest run at
    ``--audio-cloud-nice`` (19): in production they are on other machines, here they share two cores.
``query``
    A progress store holding ``--query-results`` results (default 1,000,000), of which one user has
    ``--user-sessions`` sessions (default 1,000); ``GetProgress`` for that user over real gRPC
    (sessions with scores + weekly trends), ``--queries`` times: p50/p95/max.

    python bench/bench_sync.py                 # all four → bench/results/sync.json
    python bench/bench_sync.py --only audio    # merged into the existing file
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import nats
import nats.js.errors
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_latency import cpu_seconds, edge_histogram  # noqa: E402

from control_plane._proto.seminote.v1 import progress_pb2, progress_pb2_grpc  # noqa: E402
from control_plane.progress_service import ProgressService  # noqa: E402
from control_plane.progress_store import ProgressStore, ResultMessage  # noqa: E402
from edge_node.events import Event  # noqa: E402
from edge_node.material import midi, render  # noqa: E402
from edge_node.outbox import Outbox  # noqa: E402
from edge_node.relay_process import ResultSync  # noqa: E402
from edge_node.settings import SyncSettings  # noqa: E402
from edge_node.tickets import TicketClaims, generate_keypair, mint_ticket, private_key_pem  # noqa: E402

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
TARGET_RESULTS_PER_S = 5_000
TARGET_QUERY_P95_MS = 50.0
POLL_S = 0.05
STREAM = "SEMINOTE_RESULTS"
INGEST_DURABLE = "progress-ingest"
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

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

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


async def prefill_outbox(path: Path, rows: int, results_per_row: int, sessions: int, prefix: str) -> int:
    """An outbox file holding ``rows`` rows of ``results_per_row`` results (a relay backlog), from
    sessions named ``<prefix><n>`` (each run its own, so the cloud stores every run's results anew)."""
    settings = SyncSettings(outbox_path=path, flush_interval_ms=60_000, outbox_max_rows=10 * rows,
                            batch_max_results=results_per_row)
    async with Outbox(settings, "edge-bench") as outbox:
        seq = 1
        while outbox.rows < rows:
            for s in range(min(sessions, rows - outbox.rows)):
                outbox.record_events(f"{prefix}{s:04d}", f"u{s % 50}",
                                     [result_event(seq + 2 * k) for k in range(results_per_row)])
            seq += 2 * results_per_row
            await outbox.flush()
        return outbox.rows


def outbox_rows(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return int(conn.execute("SELECT rows FROM outbox_count").fetchone()[0])
    finally:
        conn.close()


def descendants(pid: int) -> list[int]:
    pids: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            for child in (int(c) for c in children.read_text().split()):
                pids += [child, *descendants(child)]
    return pids


def is_relay(pid: int) -> bool:
    try:
        return b"edge_node.relay_process" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def tree_cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


def _discard(stream: Any) -> None:
    for _ in stream:
        pass


def start_edge(tmp: Path, key_file: Path, max_sessions: int, extra_env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """``seminote-edge serve`` as its own process (what bench_latency runs), plus ``extra_env``."""
    env = {**os.environ, "SEMINOTE_EDGE_SERVER__TICKET_PRIVATE_KEY": str(key_file), "SEMINOTE_EDGE_EDGE_ID": "edge-bench",
           "SEMINOTE_EDGE_SERVER__MAX_SESSIONS": str(max_sessions), **extra_env}
    proc = subprocess.Popen([sys.executable, "-m", "edge_node", "serve", "--port", "0", "--log-format", "json"],
                            env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=tmp)
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        if '"edge listening"' in line:
            threading.Thread(target=_discard, args=(proc.stderr,), daemon=True).start()  # never block the edge
            return proc, str(json.loads(line)["url"])
    proc.kill()
    raise RuntimeError("edge did not start")


def feedback_run(tmp: Path, sessions: int, wav: Path, ref: list[float], extra_env: dict[str, str],
                 outbox: Path | None, cloud_pids: list[int]) -> dict[str, Any]:
    """One latency run: the edge as its own process, ``sessions`` real WebRTC clients (bench_latency's
    worker) playing the piece; client-measured onset-to-feedback latencies, CPU, what the relay did."""
    private, _ = generate_keypair()
    key_file = tmp / "ticket.pem"
    key_file.write_text(private_key_pem(private))
    edge, url = start_edge(tmp, key_file, sessions + 4, extra_env)
    load_before = os.getloadavg()[0]
    try:
        relay = []
        for _ in range(100):  # the relay process is spawned as the edge starts
            relay = [pid for pid in descendants(edge.pid) if is_relay(pid)]
            if outbox is None or relay:
                break
            time.sleep(0.05)
        # the audio path: the edge process and any worker processes it runs (not the relay)
        audio = [edge.pid, *(pid for pid in descendants(edge.pid) if not is_relay(pid))]
        now = time.time()
        tickets = [mint_ticket(private, TicketClaims(f"lat-{i}-{now}", "bench", "edge-bench", exp=now + 900, iat=now))
                   for i in range(sessions)]
        rows_before = outbox_rows(outbox) if outbox is not None else 0
        groups = {"edge": audio, "relay": relay, "nats_and_ingest": cloud_pids}
        cpu0 = {name: tree_cpu_seconds(pids) for name, pids in groups.items()}
        wall0 = time.monotonic()
        worker = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_latency.py"), "--worker"],
                                input=json.dumps({"whip_url": url + "v1/whip", "tickets": tickets, "wav": str(wav),
                                                  "ref": ref, "stagger_s": 0.5}),
                                capture_output=True, text=True, cwd=ROOT, timeout=900, check=True)
        wall_s = time.monotonic() - wall0
        cpu = {name: round((tree_cpu_seconds(pids) - cpu0[name]) / wall_s, 3) for name, pids in groups.items()}
        rows_after = outbox_rows(outbox) if outbox is not None else 0
        internal = edge_histogram(url)
    finally:
        edge.terminate()
        edge.wait(timeout=60)
    out = json.loads(worker.stdout.strip().splitlines()[-1])
    latencies = [x * 1000 for sess in out["sessions"] for x in sess["latencies"]]
    return {
        "latencies": latencies, "latency_ms": pct(latencies), "completed_sessions": len(out["sessions"]),
        "failures": out["failures"], "wall_s": round(wall_s, 1), "edge_internal_ms": internal,
        "cpu_cores": cpu, "edge_processes": len(audio), "relay_processes": len(relay),
        "outbox_rows_before_after": [rows_before, rows_after],
        "relay_rows_per_s": round((rows_before - rows_after) / wall_s) if outbox is not None else 0,
        "relay_busy_throughout": outbox is not None and rows_after > 0,
        "load_average_1m_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def pct(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    a = np.asarray(values)
    return {"n": int(a.size), **{f"p{q}": round(float(np.percentile(a, q)), 2) for q in (50, 90, 99)},
            "max": round(float(a.max()), 2)}


async def ingest_caught_up(cloud: Cloud, timeout_s: float) -> float:
    """Seconds until the ingest has stored and acked everything in the stream (so a run does not
    inherit the previous run's cloud work)."""
    nc = await nats.connect(cloud.url, connect_timeout=2)
    start = time.monotonic()
    try:
        js = nc.jetstream()
        while True:
            info = await js.consumer_info(STREAM, INGEST_DURABLE)
            if info.num_pending == 0 and info.num_ack_pending == 0:
                return round(time.monotonic() - start, 1)
            if time.monotonic() - start > timeout_s:
                raise TimeoutError(f"ingest still has {info.num_pending} messages after {timeout_s}s")
            await asyncio.sleep(0.5)
    finally:
        await nc.close()


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    pooled = [x for r in runs for x in r["latencies"]]
    return {
        "median_of_runs_ms": {k: round(statistics.median(r["latency_ms"][k] for r in runs), 2) for k in ("p50", "p90", "p99")},
        "pooled_ms": pct(pooled),
        "p99_per_run_ms": [r["latency_ms"]["p99"] for r in runs],
    }


async def bench_audio(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Feedback latency of live sessions without sync, and with sync while the relay process catches up
    an outbox backlog of ``--audio-backlog-rows`` rows (a fresh one per run), in alternating runs
    (AB BA AB ...: drift on this shared machine hits both alike). Each run plays a piece of
    ``--audio-notes`` notes on ``--audio-sessions`` sessions: enough onsets that p99 is not one sample."""
    rng = np.random.default_rng(2024)  # bench_latency's piece (same seed, range and tempo), longer
    piece = midi.melody(rng, lo=48, hi=84, n_notes=args.audio_notes, bpm=132)
    wav, ref = render.render(piece.midi), midi.onsets_of(piece.midi).tolist()
    cloud = Cloud(tmp / "audio", nice=args.audio_cloud_nice)
    baseline: list[dict[str, Any]] = []
    loaded: list[dict[str, Any]] = []
    waits: list[float] = []
    cloud.start()
    try:
        await cloud.wait_ready()
        for i in range(args.audio_repeats):
            for condition in (("base", "sync") if i % 2 == 0 else ("sync", "base")):
                run_dir = tmp / f"audio-{condition}-{i}"
                run_dir.mkdir()
                if condition == "base":
                    baseline.append(await asyncio.to_thread(feedback_run, run_dir, args.audio_sessions, wav, ref, {}, None,
                                                            cloud.pids))
                    print("audio without sync", {k: v for k, v in baseline[-1].items() if k != "latencies"}, flush=True)
                    continue
                outbox = run_dir / "outbox.db"
                await prefill_outbox(outbox, args.audio_backlog_rows, args.results_per_row, args.sessions, f"bk{i}-")
                env = {"SEMINOTE_EDGE_SYNC__ENABLED": "true", "SEMINOTE_EDGE_SYNC__OUTBOX_PATH": str(outbox),
                       "SEMINOTE_EDGE_SYNC__NATS_URLS": json.dumps([cloud.url]),
                       **({} if args.relay_max_rows_per_s is None else
                          {"SEMINOTE_EDGE_SYNC__RELAY_MAX_ROWS_PER_S": str(args.relay_max_rows_per_s)})}
                loaded.append(await asyncio.to_thread(feedback_run, run_dir, args.audio_sessions, wav, ref, env, outbox,
                                                          cloud.pids))
                print("audio while the relay drains", {k: v for k, v in loaded[-1].items() if k != "latencies"}, flush=True)
                outbox.unlink()
                waits.append(await ingest_caught_up(cloud, args.timeout_s))
    finally:
        cloud.stop()
    base, sync = _summary(baseline), _summary(loaded)
    base_p99 = base["p99_per_run_ms"]
    noise = round(max(base_p99) - min(base_p99), 2)
    delta = round(sync["median_of_runs_ms"]["p99"] - base["median_of_runs_ms"]["p99"], 2)
    return {
        "backlog_rows": args.audio_backlog_rows, "backlog_results": args.audio_backlog_rows * args.results_per_row,
        "sessions": args.audio_sessions, "notes_per_session": len(ref), "repeats": args.audio_repeats,
        "cloud_nice": args.audio_cloud_nice, "relay_busy_throughout_every_run": all(r["relay_busy_throughout"] for r in loaded),
        "relay_rows_per_s_per_run": [r["relay_rows_per_s"] for r in loaded],
        "relay_cpu_cores_per_run": [r["cpu_cores"].get("relay") for r in loaded],
        "ingest_catch_up_seconds_after_each_loaded_run": waits,
        "without_sync": base, "while_relay_catches_up": sync,
        "p99": {"noise_ms": noise, "noise_definition": "max - min of p99 over the runs without sync (same bench run)",
                "delta_of_medians_ms": delta, "within_noise": abs(delta) <= noise},
        "runs": {"without_sync": [{k: v for k, v in r.items() if k != "latencies"} for r in baseline],
                 "while_relay_catches_up": [{k: v for k, v in r.items() if k != "latencies"} for r in loaded]},
    }


async def repeated(part: Any, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """``--repeats`` runs of a throughput part, each against a fresh cloud: the median and every run."""
    runs = []
    for i in range(args.repeats):
        run_dir = tmp / f"run{i}"
        run_dir.mkdir(parents=True)
        runs.append(await part(args, run_dir))
        print(f"  run {i}", runs[-1], flush=True)
    median = round(statistics.median(r["results_per_s"] for r in runs))
    return {"results_per_s_median": median, "meets_target": median >= TARGET_RESULTS_PER_S, "runs": runs}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "benchmark": "result sync", "host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "targets": {"results_per_s": TARGET_RESULTS_PER_S, "progress_p95_ms": TARGET_QUERY_P95_MS},
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as d:
        tmp = Path(d)
        if args.only in (None, "backlog"):
            out["backlog"] = await repeated(bench_backlog, args, tmp / "backlog")
            print("backlog", out["backlog"], flush=True)
        if args.only in (None, "sustained"):
            out["sustained"] = await repeated(bench_sustained, args, tmp / "sustained")
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
    parser.add_argument("--audio-notes", type=int, default=160,
                        help="audio: notes in the piece each session plays (onsets measured per run: sessions x notes)")
    parser.add_argument("--audio-repeats", type=int, default=3, help="audio: runs of each condition, alternating")
    parser.add_argument("--audio-cloud-nice", type=int, default=19,
                        help="audio: nice level of nats-server and the ingest, which stand in for the control "
                        "plane's own machines (0: compete with the edge for this machine's CPU)")
    parser.add_argument("--repeats", type=int, default=3, help="backlog/sustained: runs of each (median reported)")
    parser.add_argument("--backlog", type=int, default=100_000, help="results waiting in the outbox")
    parser.add_argument("--sessions", type=int, default=64, help="concurrent sessions on the edge")
    parser.add_argument("--results-per-row", type=int, default=8, help="results per outbox row in the backlog")
    parser.add_argument("--rate", type=float, default=6_000.0, help="sustained: results/s produced")
    parser.add_argument("--duration-s", type=float, default=20.0, help="sustained: production time")
    parser.add_argument("--relay-max-rows-per-s", type=float, default=None,
                        help="relay pace in every part (default: the setting's default; 0: unpaced)")
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
