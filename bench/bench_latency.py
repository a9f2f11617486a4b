"""Onset-to-feedback latency and edge CPU per session, at several numbers of concurrent sessions.

Latency is what a student feels: measured by the Python client, from the moment a note's first audio
frame is handed to the sender (the 20 ms frame that contains the note's MIDI start) to the moment the
``onset`` event for that note arrives on the data channel. Both times come from the client's
``time.monotonic()``. The edge runs as its own process (``python -m edge_node serve``) so its CPU can
be read from ``/proc``; clients run in ``--client-procs`` worker processes, each a real aiortc peer
per session, session starts spread over ``--stagger`` seconds.

Breakdown (per run): ``edge_internal_ms`` is the edge's own histogram (packet arrival → events sent),
``dc_one_way_ms`` half the data-channel ping round trip (network + SCTP + both event loops), and
``detection_wait_ms`` the rest: audio after the note's first frame that the codec (Opus look-ahead,
6.5 ms) and the onset kernel (hop and refinement) need before the onset can be decided.

    python bench/bench_latency.py                       # 1, 10, 20, 50 sessions → bench/results/latency.json
    python bench/bench_latency.py --sessions 1 --receive-path stock   # aiortc's stock jitter buffer
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_node.audio import CHUNK_SAMPLES, SAMPLE_RATE_HZ  # noqa: E402
from edge_node.material import midi, render  # noqa: E402
from edge_node.tickets import TicketClaims, generate_keypair, mint_ticket, private_key_pem  # noqa: E402

MATCH_WINDOW_S = 0.05
CLK_TCK = os.sysconf("SC_CLK_TCK")


def piece() -> tuple[Path, np.ndarray]:
    p = midi.melody(np.random.default_rng(2024), lo=48, hi=84, n_notes=28, bpm=132)
    return render.render(p.midi), midi.onsets_of(p.midi)


# ------------------------------------------------------------------------------ worker


def _is_pong(ping_id: float) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("type") == "pong" and e.get("id") == ping_id


async def run_sessions(whip_url: str, tickets: list[str], wav: str, ref: list[float], stagger_s: float) -> dict[str, Any]:
    from edge_node.client import FileAudioTrack, PracticeClient

    rng = np.random.default_rng(len(tickets))
    reference = np.asarray(ref)

    async def one(ticket: str, delay: float) -> dict[str, Any]:
        await asyncio.sleep(delay)
        track = FileAudioTrack(wav, tail_s=0.5)
        client = PracticeClient(whip_url, ticket, track)
        rtts: list[float] = []
        try:
            await client.start()
            stream = asyncio.create_task(client.stream(stop=False), name="bench-stream")
            while not stream.done():
                await asyncio.sleep(1.0)
                sent = time.monotonic()
                try:
                    await client.send_control({"type": "ping", "id": sent})
                    pong = await client.wait_for(_is_pong(sent), 5)
                    rtts.append(time.monotonic() - pong["id"])
                except (TimeoutError, ConnectionError):
                    pass
            await stream
        finally:
            await client.aclose()
        onsets = [r for r in client.events if r.event["type"] == "onset"]
        est = np.array([r.event["t"] for r in onsets])
        if est.size == 0:
            return {"latencies": [], "rtts": rtts, "f": 0.0, "offset": None}
        nearest = est[np.abs(est[None, :] - reference[:, None]).argmin(axis=1)]
        offset = float(np.median(nearest - reference))
        import mir_eval

        f, _, _ = mir_eval.onset.f_measure(reference, np.sort(est - offset), window=MATCH_WINDOW_S)
        latencies = []
        used: set[int] = set()
        for r in reference:
            i = int(np.abs(est - offset - r).argmin())
            if abs(est[i] - offset - r) > MATCH_WINDOW_S or i in used:
                continue
            used.add(i)
            frame = int(round(r * SAMPLE_RATE_HZ)) // CHUNK_SAMPLES
            if frame < len(track.sent_at):
                latencies.append(onsets[i].received_at - track.sent_at[frame])
        return {"latencies": latencies, "rtts": rtts, "f": float(f), "offset": offset}

    results = await asyncio.gather(
        *(one(t, float(rng.uniform(0, stagger_s))) for t in tickets), return_exceptions=True
    )
    ok = [r for r in results if isinstance(r, dict)]
    return {"sessions": ok, "failures": [repr(r) for r in results if not isinstance(r, dict)]}


def worker_main() -> None:
    job = json.loads(sys.stdin.read())
    out = asyncio.run(run_sessions(job["whip_url"], job["tickets"], job["wav"], job["ref"], job["stagger_s"]))
    print(json.dumps(out))


# -------------------------------------------------------------------------------- main


def _renice(niceness: int) -> Callable[[], None] | None:
    """preexec_fn lowering (or, as root, raising) the scheduling priority of a bench process."""
    if not niceness:
        return None
    return lambda: os.setpriority(os.PRIO_PROCESS, 0, niceness)


def start_edge(
    key_file: Path, max_sessions: int, receive_path: str, niceness: int = 0
) -> tuple[subprocess.Popen[str], str]:
    env = dict(
        os.environ, SEMINOTE_EDGE_SERVER__TICKET_PRIVATE_KEY=str(key_file), SEMINOTE_EDGE_EDGE_ID="edge-bench",
        SEMINOTE_EDGE_SERVER__MAX_SESSIONS=str(max_sessions), SEMINOTE_EDGE_SERVER__RECEIVE_PATH=receive_path,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_node", "serve", "--port", "0", "--log-format", "json"],
        env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT,
        preexec_fn=_renice(niceness),
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        if '"edge listening"' in line:
            url = json.loads(line)["url"]
            # keep draining stderr so the edge never blocks on a full pipe
            import threading

            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
            return proc, url
    proc.kill()
    raise RuntimeError("edge did not start")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (0 once it has gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the edge's front and its worker processes)."""
    pids = [pid]
    for p in pids:
        for task in Path(f"/proc/{p}/task").glob("*"):
            children = task / "children"
            if children.exists():
                pids += [int(x) for x in children.read_text().split()]
    return list(dict.fromkeys(pids))


def tree_cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for p in pids:
        with contextlib.suppress(FileNotFoundError):
            total += cpu_seconds(p)
    return total


def edge_histogram(url: str) -> dict[str, float]:
    import urllib.request

    text = urllib.request.urlopen(url + "metrics", timeout=10).read().decode()
    buckets = []
    for m in re.finditer(r'seminote_edge_feedback_latency_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)', text):
        buckets.append((float(m.group(1)), float(m.group(2))))
    total = buckets[-1][1] if buckets else 0.0

    def quantile(q: float) -> float:
        for le, count in buckets:
            if count >= q * total:
                return le * 1000
        return float("nan")

    return {"p50_le_ms": quantile(0.5), "p99_le_ms": quantile(0.99), "observations": total}


def percentiles(values: list[float], scale: float = 1000.0) -> dict[str, float]:
    if not values:
        return {"n": 0}
    a = np.asarray(values) * scale
    return {
        "n": int(a.size), "p50": round(float(np.percentile(a, 50)), 2), "p90": round(float(np.percentile(a, 90)), 2),
        "p99": round(float(np.percentile(a, 99)), 2), "max": round(float(a.max()), 2), "mean": round(float(a.mean()), 2),
    }


def run(n_sessions: int, receive_path: str, client_procs: int, stagger_s: float, niceness: int = 0) -> dict[str, Any]:
    wav, ref = piece()
    private, _ = generate_keypair()
    with tempfile.TemporaryDirectory() as tmp:
        key_file = Path(tmp) / "ticket.pem"
        key_file.write_text(private_key_pem(private))
        edge, url = start_edge(key_file, n_sessions + 4, receive_path, niceness)
        load_before = os.getloadavg()
        try:
            now = time.time()
            tickets = [
                mint_ticket(private, TicketClaims(f"bench-{i}", "bench", "edge-bench", exp=now + 600, iat=now))
                for i in range(n_sessions)
            ]
            procs = max(1, min(client_procs, n_sessions))
            shares = [tickets[i::procs] for i in range(procs)]
            edge_pids = process_tree(edge.pid)  # every worker process, not only the front
            cpu0, wall0 = tree_cpu_seconds(edge_pids), time.monotonic()
            workers = [
                subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, cwd=ROOT, preexec_fn=_renice(niceness))
                for _ in shares
            ]
            for w, share in zip(workers, shares, strict=True):
                assert w.stdin is not None
                w.stdin.write(json.dumps({"whip_url": url + "v1/whip", "tickets": share, "wav": str(wav),
                                          "ref": ref.tolist(), "stagger_s": stagger_s}))
                w.stdin.close()
            outputs = []
            for w in workers:
                assert w.stdout is not None
                text = w.stdout.read()
                w.wait(timeout=60)
                outputs.append(json.loads(text.strip().splitlines()[-1]))
            cpu_s, wall_s = tree_cpu_seconds(edge_pids) - cpu0, time.monotonic() - wall0
            internal = edge_histogram(url)
        finally:
            edge.terminate()
            edge.wait(timeout=30)
    sessions = [s for o in outputs for s in o["sessions"]]
    latencies = [x for s in sessions for x in s["latencies"]]
    rtts = [x for s in sessions for x in s["rtts"]]
    lat = percentiles(latencies)
    one_way = percentiles([r / 2 for r in rtts])
    return {
        "sessions": n_sessions,
        "receive_path": receive_path,
        "completed_sessions": len(sessions),
        "failures": [f for o in outputs for f in o["failures"]],
        "latency_ms": lat,
        "onset_f_mean": round(float(np.mean([s["f"] for s in sessions])), 4) if sessions else None,
        "stream_offset_ms_median": round(float(np.median([s["offset"] for s in sessions if s["offset"] is not None])) * 1000, 2)
        if sessions else None,
        "edge_cpu_core_fraction": round(cpu_s / wall_s, 4),
        "cpu_per_session_core_fraction": round(cpu_s / wall_s / n_sessions, 5),
        "edge_internal_ms": internal,
        "dc_one_way_ms": one_way,
        "detection_wait_ms_p50": round(lat.get("p50", float("nan")) - internal["p50_le_ms"] - one_way.get("p50", 0), 2)
        if lat.get("n") else None,
        "wall_s": round(wall_s, 1),
        "niceness": niceness,
        "load_average_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    if "--worker" in sys.argv:
        worker_main()
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 10, 20, 50])
    ap.add_argument("--receive-path", choices=("low_latency", "stock", "both"), default="low_latency")
    ap.add_argument("--client-procs", type=int, default=1, help="client worker processes (default 1)")
    ap.add_argument("--stagger", type=float, default=0.5, help="session starts spread over this many seconds")
    ap.add_argument("--nice", type=int, default=0,
                    help="scheduling niceness of the edge and client processes (negative needs root): on a "
                         "shared machine, -10 measures the edge given the CPU it asks for")
    ap.add_argument("--append", action="store_true", help="add the runs to those already in --out")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latency.json")
    args = ap.parse_args()
    paths = ["low_latency", "stock"] if args.receive_path == "both" else [args.receive_path]
    runs = []
    for path in paths:
        for n in args.sessions:
            result = run(n, path, args.client_procs, args.stagger, args.nice)
            result["command"] = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
            print(json.dumps(result), flush=True)
            runs.append(result)
    if args.out.exists() and args.append:
        previous = json.loads(args.out.read_text())
        runs = previous.get("runs", []) + runs
    report = {
        "benchmark": "onset-to-feedback latency (client-measured) and edge CPU per session, loopback",
        "cpu_model": _cpu_model(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "targets": {"latency_p50_ms": 25, "latency_p99_ms": 40},
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
