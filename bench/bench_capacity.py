"""Edge capacity: N concurrent light-mode sessions on this machine, clients included.

For each N the edge (``python -m edge_node serve``, all its worker processes) serves N real WebRTC
sessions from the lean load generator (``bench/loadgen.py``: real ICE/DTLS/SRTP/SCTP peers sending a
rendered piece's pre-encoded Opus packets, many per process). Once every session is live and a settle
time has passed, a measurement window of ``--window`` seconds records:

- onset-to-feedback latency (client clock: the note's first audio packet sent → its ``onset`` event
  received), p50/p90/p99/max, and onset recall (reference onsets that got an event within 50 ms);
- frames dropped: the edge's ``seminote_edge_audio_frames_dropped`` counters (late, duplicate,
  concealed, undecodable) against the frames it decoded, and packets the clients sent late;
- CPU (``/proc``, user+system) of the edge (every process of its tree) and of the clients, and per
  session;
- in the same run, the **peer**: a plain aiortc receive loop (``RTCPeerConnection``, stock jitter
  buffer and decoder thread, ``await track.recv()`` in a loop, nothing else) serving the same load
  generator, its CPU per session.

    python bench/bench_capacity.py --sessions 50 100 150 --repeat 3   # → bench/results/capacity.json
    python bench/bench_capacity.py --sessions 60 --profile /tmp/edge.txt   # py-spy of the edge
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_latency import cpu_seconds, process_tree  # noqa: E402

from edge_node.audio import CHUNK_SAMPLES, SAMPLE_RATE_HZ  # noqa: E402
from edge_node.tickets import TicketClaims, generate_keypair, mint_ticket, private_key_pem  # noqa: E402

MATCH_WINDOW_S = 0.05
TARGET_P99_MS = 50.0
PROFILE_CLIENTS = os.environ.get("BENCH_PROFILE_CLIENTS")  # py-spy the load generator into this path (.0, .1, ...)


# ------------------------------------------------------------------------------ client worker


def prepared_audio() -> tuple[Any, np.ndarray]:
    from bench_latency import piece
    from loadgen import PreparedAudio, audio_level_dbov

    from edge_node.audio import iter_file_chunks
    from edge_node.client import _encoded_file

    wav, ref = piece()
    tail_frames = 25
    packets = _encoded_file(str(wav), tail_frames)
    levels = [audio_level_dbov(c) for c in iter_file_chunks(str(wav))]
    levels += [127] * (len(packets) - len(levels))
    return PreparedAudio(packets, levels[: len(packets)]), ref


def session_latencies(
    onsets: list[tuple[float, float]], sent_at: list[float], ref: np.ndarray, period_s: float,
    window: tuple[float, float],
) -> tuple[list[float], int, int]:
    """Latencies of the onsets whose note's first packet was sent inside ``window``; and how many
    reference onsets fell in the window, and how many of those got an onset event."""
    if not sent_at:
        return [], 0, 0
    frames = len(sent_at)
    loops = int(np.ceil(frames * 0.02 / period_s)) + 1
    expected = (ref[None, :] + period_s * np.arange(loops)[:, None]).reshape(-1)
    frame_of = (np.round(expected * SAMPLE_RATE_HZ).astype(np.int64)) // CHUNK_SAMPLES
    keep = frame_of < frames
    expected, frame_of = expected[keep], frame_of[keep]
    sent = np.asarray(sent_at)[frame_of]
    in_window = (sent >= window[0]) & (sent < window[1])
    if not onsets:
        return [], int(in_window.sum()), 0
    est = np.array([t for t, _ in onsets])
    recv = np.array([r for _, r in onsets])
    nearest = est[np.abs(est[None, :] - expected[:200, None]).argmin(axis=1)] if expected.size else est
    offset = float(np.median(nearest - expected[: nearest.size])) if expected.size else 0.0
    latencies: list[float] = []
    used: set[int] = set()
    hits = 0
    for j in np.flatnonzero(in_window):
        i = int(np.abs(est - offset - expected[j]).argmin())
        if abs(est[i] - offset - expected[j]) > MATCH_WINDOW_S or i in used:
            continue
        used.add(i)
        hits += 1
        latencies.append(float(recv[i] - sent[j]))
    return latencies, int(in_window.sum()), hits


async def run_clients(job: dict[str, Any]) -> dict[str, Any]:
    import aiohttp
    from loadgen import LeanClient, Pacer

    audio, ref = prepared_audio()
    pacer = Pacer()
    pacer_task = asyncio.create_task(pacer.run(), name="pacer")
    clients: list[LeanClient] = []
    failures: list[str] = []
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    t0 = job["start_at"]

    async def one(i: int, ticket: str) -> None:
        await asyncio.sleep(max(0.0, t0 + job["offsets"][i] - time.monotonic()))
        client = LeanClient(job["whip_url"], ticket, audio)
        try:
            await client.start(http)
        except Exception as exc:  # a refused or failed session is reported, the others go on
            failures.append(repr(exc)[:300])
            if client.pc is not None:
                await client.pc.close()
            return
        clients.append(client)
        pacer.add(client)

    await asyncio.gather(*(one(i, t) for i, t in enumerate(job["tickets"])))
    started_at = time.monotonic()
    await asyncio.sleep(max(0.0, job["end_at"] - time.monotonic()))
    window = (job["window_start"], job["end_at"])
    pacer_task.cancel()
    latencies: list[float] = []
    expected = hits = 0
    for c in clients:
        lat, n, h = session_latencies(c.onsets, c.sent_at, ref, audio.period_s, window)
        latencies += lat
        expected += n
        hits += h
    late = np.asarray(pacer.late_s)
    out = {
        "sessions": len(clients), "failures": failures, "latencies": latencies,
        "expected_onsets": expected, "matched_onsets": hits,
        "packets_sent": sum(len(c.sent_at) for c in clients),
        "events_received": sum(c.events for c in clients),
        "all_started_at": started_at,
        "pacer_late_ms_p99": round(float(np.percentile(late, 99)) * 1000, 2) if late.size else None,
        "pacer_late_over_20ms": int((late > 0.02).sum()),
    }
    await asyncio.gather(*(c.aclose(http) for c in clients), return_exceptions=True)
    await http.close()
    return out


def client_main() -> None:
    job = json.loads(sys.stdin.read())
    out = asyncio.run(run_clients(job))
    print(json.dumps(out))


# ------------------------------------------------------------------------------ the peer


async def plain_receiver_server(port_file: str) -> None:
    """WHIP endpoint whose sessions are plain aiortc receive loops (the peer)."""
    from aiohttp import web
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError

    pcs: set[Any] = set()
    tasks: set[asyncio.Task[None]] = set()

    async def drain(track: Any) -> None:
        try:
            while True:
                await track.recv()
        except MediaStreamError:
            return

    async def whip(request: web.Request) -> web.Response:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pcs.add(pc)

        @pc.on("track")
        def on_track(track: Any) -> None:
            task = asyncio.create_task(drain(track))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        await pc.setRemoteDescription(RTCSessionDescription(sdp=await request.text(), type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        sid = f"p{len(pcs)}"
        request.app["pcs"][sid] = pc
        return web.Response(status=201, text=pc.localDescription.sdp, content_type="application/sdp",
                            headers={"Location": f"/v1/sessions/{sid}"})

    async def delete(request: web.Request) -> web.Response:
        pc = request.app["pcs"].pop(request.match_info["sid"], None)
        if pc is not None:
            await pc.close()
        return web.Response(status=204)

    app = web.Application()
    app["pcs"] = {}
    app.router.add_post("/v1/whip", whip)
    app.router.add_delete("/v1/sessions/{sid}", delete)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    await asyncio.to_thread(Path(port_file).write_text, str(port))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await asyncio.gather(*(pc.close() for pc in pcs), return_exceptions=True)
    await runner.cleanup()


# ------------------------------------------------------------------------------ measurement


def tree_cpu_s(pid: int, pids: list[int] | None = None) -> dict[int, float]:
    return {p: cpu_seconds(p) for p in (pids or process_tree(pid))}


def scrape(url: str) -> str:
    import urllib.request

    return urllib.request.urlopen(url + "metrics", timeout=10).read().decode()


def metric_sum(text: str, name: str, label: str | None = None) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in re.finditer(rf"^{name}(\{{[^}}]*\}})? ([0-9.e+\-]+)$", text, re.M):
        labels = m.group(1) or ""
        key = ""
        if label:
            lm = re.search(rf'{label}="([^"]*)"', labels)
            key = lm.group(1) if lm else ""
        out[key] = out.get(key, 0.0) + float(m.group(2))
    return out


def percentiles(values: list[float], scale: float = 1000.0) -> dict[str, float]:
    if not values:
        return {"n": 0}
    a = np.asarray(values) * scale
    return {"n": int(a.size), **{f"p{q}": round(float(np.percentile(a, q)), 2) for q in (50, 90, 99)},
            "max": round(float(a.max()), 2)}


def start_server(argv: list[str], env: dict[str, str], ready: str, timeout_s: float = 120.0,
                 cwd: Path = ROOT) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=cwd,
                            start_new_session=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        if ready in line:
            url = json.loads(line)["url"]
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
            return proc, url
    proc.kill()
    raise RuntimeError(f"server did not start: {argv}")


def drive(whip_url: str, tickets: list[str], procs: int, ramp_s: float, settle_s: float, window_s: float,
          server_pid: int, niceness: int) -> dict[str, Any]:
    """Run the clients against ``whip_url``; measure CPU of ``server_pid``'s tree and of the clients."""
    n = len(tickets)
    rng = np.random.default_rng(n)
    offsets = np.sort(rng.uniform(0, ramp_s, n)).tolist()
    start_at = time.monotonic() + 2.0 + 0.02 * n / max(procs, 1)  # client processes import and render first
    window_start = start_at + ramp_s + settle_s
    end_at = window_start + window_s
    workers = []
    for w in range(procs):
        idx = list(range(w, n, procs))
        job = {"whip_url": whip_url, "tickets": [tickets[i] for i in idx], "offsets": [offsets[i] for i in idx],
               "start_at": start_at, "window_start": window_start, "end_at": end_at}
        argv = [sys.executable, __file__, "--client"]
        if PROFILE_CLIENTS:
            argv = ["py-spy", "record", "-r", "100", "-f", "raw", "-o", f"{PROFILE_CLIENTS}.{w}", "--", *argv]
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, cwd=ROOT, preexec_fn=(lambda: os.nice(niceness)) if niceness else None)
        assert p.stdin is not None
        p.stdin.write(json.dumps(job))
        p.stdin.close()
        workers.append(p)
    time.sleep(max(0.0, window_start - time.monotonic()))
    server_pids = process_tree(server_pid)
    s0, c0, w0 = tree_cpu_s(server_pid, server_pids), {w.pid: cpu_seconds(w.pid) for w in workers}, time.monotonic()
    load0 = os.getloadavg()[0]
    time.sleep(max(0.0, end_at - time.monotonic()))
    s1, c1, w1 = tree_cpu_s(server_pid, server_pids), {w.pid: cpu_seconds(w.pid) for w in workers}, time.monotonic()
    outs = []
    for proc in workers:
        assert proc.stdout is not None
        text = proc.stdout.read()
        proc.wait(timeout=120)
        outs.append(json.loads([line for line in text.splitlines() if line.startswith("{")][-1]))
    wall = w1 - w0
    server_cpu = sum(s1[p] - s0.get(p, 0.0) for p in s1) / wall
    client_cpu = sum(c1[p] - c0[p] for p in c1) / wall
    late_started = sum(1 for o in outs if o["all_started_at"] > window_start)
    return {"outs": outs, "server_cpu": server_cpu, "client_cpu": client_cpu, "wall": wall,
            "server_processes": len(server_pids), "load_1m_at_window": round(load0, 2),
            "client_procs_started_late": late_started}


def run_edge(n: int, args: argparse.Namespace) -> dict[str, Any]:
    private, _ = generate_keypair()
    with tempfile.TemporaryDirectory() as tmp:
        key_file = Path(tmp) / "ticket.pem"
        key_file.write_text(private_key_pem(private))
        env = dict(os.environ, SEMINOTE_EDGE_SERVER__TICKET_PRIVATE_KEY=str(key_file), SEMINOTE_EDGE_EDGE_ID="edge-bench",
                   SEMINOTE_EDGE_SERVER__MAX_SESSIONS=str(n + 8), SEMINOTE_EDGE_SERVER__OVERLOAD_LAG_MS="0")
        if args.workers is not None:
            env["SEMINOTE_EDGE_SERVER__WORKERS"] = str(args.workers)
        argv = [sys.executable, "-m", "edge_node", "serve", "--port", "0", "--log-format", "json"]
        if args.profile:
            argv = ["py-spy", "record", "-r", "100", "-f", "raw", "-o", args.profile, "--subprocesses", "--", *argv]
        for setting in args.edge_env:
            name, _, value = setting.partition("=")
            env[name] = value
        edge, url = start_server(argv, env, '"edge listening"', cwd=args.edge_root)
        try:
            now = time.time()
            tickets = [mint_ticket(private, TicketClaims(f"cap-{i}", "bench", "edge-bench", exp=now + 3600, iat=now))
                       for i in range(n)]
            res = drive(url + "v1/whip", tickets, args.client_procs, args.ramp, args.settle, args.window, edge.pid,
                        args.nice)
            text = scrape(url)
        finally:
            edge.send_signal(signal.SIGINT if args.profile else signal.SIGTERM)
            try:
                edge.wait(timeout=90)
            except subprocess.TimeoutExpired:
                edge.kill()
    outs = res["outs"]
    lat = percentiles([x for o in outs for x in o["latencies"]])
    expected = sum(o["expected_onsets"] for o in outs)
    dropped = metric_sum(text, "seminote_edge_audio_frames_dropped_total", "kind")
    decoded = sum(metric_sum(text, "seminote_edge_audio_frames_total").values())
    sessions_ok = sum(o["sessions"] for o in outs)
    return {
        "sessions": n, "sessions_live": sessions_ok,
        "failures": [f for o in outs for f in o["failures"]][:10],
        "latency_ms": lat,
        "onset_recall": round(sum(o["matched_onsets"] for o in outs) / expected, 4) if expected else None,
        "frames_decoded": int(decoded), "frames_dropped": {k: int(v) for k, v in dropped.items()},
        "frames_dropped_total": int(sum(dropped.values())),
        "pacer_late_ms_p99": max((o["pacer_late_ms_p99"] or 0.0) for o in outs),
        "edge_cpu_cores": round(res["server_cpu"], 3),
        "edge_processes": res["server_processes"],
        "edge_cpu_per_session_pct_core": round(100 * res["server_cpu"] / max(sessions_ok, 1), 3),
        "client_cpu_cores": round(res["client_cpu"], 3),
        "client_cpu_per_session_pct_core": round(100 * res["client_cpu"] / max(sessions_ok, 1), 3),
        "window_s": round(res["wall"], 1), "load_1m_at_window": res["load_1m_at_window"],
        "meets_target": bool(sessions_ok == n and lat.get("p99", 1e9) <= TARGET_P99_MS and not sum(dropped.values())),
    }


def run_peer(n: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        proc = subprocess.Popen([sys.executable, __file__, "--peer-server", str(port_file)], cwd=ROOT,
                                start_new_session=True)
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text():
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("peer server did not start")
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port_file.read_text()}/v1/whip"
        try:
            res = drive(url, [f"peer-{i}" for i in range(n)], args.client_procs, args.ramp, args.settle, args.window,
                        proc.pid, args.nice)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    live = sum(o["sessions"] for o in res["outs"])
    return {"sessions": n, "sessions_live": live, "cpu_cores": round(res["server_cpu"], 3),
            "cpu_per_session_pct_core": round(100 * res["server_cpu"] / max(live, 1), 3),
            "client_cpu_cores": round(res["client_cpu"], 3)}


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    if "--client" in sys.argv:
        client_main()
        return
    if "--peer-server" in sys.argv:
        asyncio.run(plain_receiver_server(sys.argv[sys.argv.index("--peer-server") + 1]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, nargs="+", default=[50, 100, 150])
    ap.add_argument("--repeat", type=int, default=1, help="runs per session count (medians are reported)")
    ap.add_argument("--workers", type=int, default=None, help="edge worker processes (default: the edge's own)")
    ap.add_argument("--client-procs", type=int, default=1, help="load-generator processes")
    ap.add_argument("--ramp", type=float, default=10.0, help="session starts spread over this many seconds")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds after the last start before measuring")
    ap.add_argument("--window", type=float, default=30.0, help="measurement window, seconds")
    ap.add_argument("--peer-sessions", type=int, default=30, help="sessions for the plain aiortc peer (0: skip)")
    ap.add_argument("--nice", type=int, default=0, help="niceness of the client processes")
    ap.add_argument("--profile", help="record the edge with py-spy (raw collapsed stacks) into this file")
    ap.add_argument("--edge-root", type=Path, default=ROOT,
                    help="run the edge from this source tree (e.g. an export of an older commit, to compare)")
    ap.add_argument("--edge-env", nargs="*", default=[], metavar="NAME=VALUE", help="extra edge settings")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "capacity.json")
    args = ap.parse_args()
    runs = []
    peers = []
    for rep in range(args.repeat):
        if args.peer_sessions:
            peer = run_peer(args.peer_sessions, args)
            peer["repeat"] = rep
            print(json.dumps({"peer": peer}), flush=True)
            peers.append(peer)
        for n in args.sessions:
            result = run_edge(n, args)
            result["repeat"] = rep
            print(json.dumps(result), flush=True)
            runs.append(result)
    summary = []
    for n in args.sessions:
        rs = [r for r in runs if r["sessions"] == n]
        summary.append({
            "sessions": n, "runs": len(rs),
            "latency_p50_ms_median": float(np.median([r["latency_ms"].get("p50", np.nan) for r in rs])),
            "latency_p99_ms_median": float(np.median([r["latency_ms"].get("p99", np.nan) for r in rs])),
            "frames_dropped_total_max": max(r["frames_dropped_total"] for r in rs),
            "edge_cpu_cores_median": float(np.median([r["edge_cpu_cores"] for r in rs])),
            "edge_cpu_per_session_pct_core_median": float(np.median([r["edge_cpu_per_session_pct_core"] for r in rs])),
            "client_cpu_per_session_pct_core_median": float(np.median([r["client_cpu_per_session_pct_core"] for r in rs])),
            "runs_meeting_target": sum(r["meets_target"] for r in rs),
        })
    peer_pct = float(np.median([p["cpu_per_session_pct_core"] for p in peers])) if peers else None
    for s in summary:
        s["edge_cpu_per_session_vs_plain_aiortc"] = (
            round(s["edge_cpu_per_session_pct_core_median"] / peer_pct, 3) if peer_pct else None)
    report = {
        "benchmark": "edge capacity: concurrent light-mode sessions, lean real-WebRTC clients on the same machine",
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "cpu_model": _cpu_model(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "targets": {"sessions": 100, "latency_p99_ms": TARGET_P99_MS, "frames_dropped": 0},
        "summary": summary,
        "peer_plain_aiortc": {"cpu_per_session_pct_core_median": peer_pct, "runs": peers},
        "runs": runs,
    }
    if args.profile:
        print(json.dumps(report["summary"]))
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
