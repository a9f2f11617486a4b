"""Route throughput and latency while a large fleet reports load, against the same server's health Check.

Three kinds of process, as in production: the control plane (``python -m control_plane serve``, with
``--workers`` route worker processes sharing the route port), a fleet of ``--edges`` real edge agents
(``EdgeAgent`` + in-memory host, one Connect stream each, load reports every ``--report-interval``
seconds), and a compiled open-loop load generator: ``h2load`` (Debian ``nghttp2-client``) sending real
gRPC requests (HTTP/2, ``application/grpc``, length-prefixed protobuf) at a fixed offered rate, so the
server, not a Python client, is what is measured, and an overloaded server shows up as latency and a
lower achieved rate.

For each offered rate the same run measures, back to back on the same server and fleet:

* ``Router/Route``: 8 request variants (regions and tempos spread over the fleet), each its own h2load
  with 8 connections (64 in all, so ``SO_REUSEPORT`` spreads them evenly over the route workers), at
  rate/64 calls per connection per second;
* ``grpc.health.v1.Health/Check``: the same shape of load on the same port: the floor Python gRPC
  gives on this machine, to read the Route figures against.

Each (rate, method) is repeated ``--repeat`` times, interleaved; the JSON has every run and the medians.
Latency is from each request's start to its response (h2load ``--log-file``), over the requests started
after ``--warmup`` seconds. Errors: h2load's failed/errored/timed-out requests and non-2xx statuses,
plus (Route) gRPC-level errors: answers the control plane did not count as routes (its ``GetStats``
route counters before and after). CPU: the control-plane process family (main + route workers), the
fleet process and the generator (h2load's own rusage), each in cores over the run.

    python bench/bench_route.py                     # 1,000..4,000/s, 3 repeats → bench/results/route.json
    python bench/bench_route.py --rates 3000 --repeat 1 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from control_plane._proto.seminote.v1 import fleet_pb2, fleet_pb2_grpc, router_pb2  # noqa: E402

ENROLL, ADMIN, CLIENT = "bench-enroll-token-0123", "bench-admin-token-01234", "bench-client-key-012345"
RESULTS = ROOT / "bench" / "results" / "route.json"
# 20 regions on a coarse world grid: 1,000 edges → 50 per region.
REGIONS = [(f"r{i:02d}", -40.0 + 20.0 * (i // 5), -120.0 + 60.0 * (i % 5)) for i in range(20)]
TARGET_RPS = 3000.0
TARGET_P99_MS = 10.0
ROUTE_PATH = "/seminote.v1.Router/Route"
HEALTH_PATH = "/grpc.health.v1.Health/Check"
VARIANTS = 8             # Route request variants, one h2load process each
CONNECTIONS = 8          # per h2load process: 64 in all, so SO_REUSEPORT spreads them evenly over the workers
MAX_STREAMS = 256        # per connection: high, so h2load never holds a due request back (open loop)
TEMPOS = (45.0, 90.0, 100.0, 150.0)  # slow (detailed), moderate (light), fast (light near / on device)
LOGIC_ROUTES = 20_000
COUNTER_SETTLE_S = 0.5   # route workers report their counters every 50 ms


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message (uncompressed)."""
    return b"\x00" + struct.pack(">I", len(message)) + message


# ------------------------------------------------------------------------------------ fleet


async def run_fleet(addr: str, edges: int, report_interval_s: float) -> None:
    """The fleet process: ``edges`` agents; prints ``ready``, runs until stdin closes, prints counters."""
    from control_plane.logs import configure_logging
    from edge_node.agent import EdgeAgent, EdgeIdentity, MemoryHost
    from edge_node.settings import ControlAgentSettings

    configure_logging("json", "warning")  # stderr; stdout carries only "ready" and the counters

    reports = 0

    class CountingHost(MemoryHost):
        def agent_metrics(self):  # type: ignore[no-untyped-def]
            nonlocal reports
            reports += 1
            return super().agent_metrics()

    settings = ControlAgentSettings(addr=addr, enrollment_token=ENROLL, keepalive_s=30.0)
    rng = random.Random(1)
    async with contextlib.AsyncExitStack() as stack:
        agents = []
        for i in range(edges):
            region, lat, lon = REGIONS[i % len(REGIONS)]
            ident = EdgeIdentity(f"edge-{i:04d}", region, lat + rng.uniform(-1, 1), lon + rng.uniform(-1, 1),
                                 f"http://127.0.0.1:1/edge-{i:04d}/v1/whip", capacity=1000,
                                 detailed_mode=i % 2 == 0, model_loaded=i % 2 == 0)
            agents.append(await stack.enter_async_context(EdgeAgent(settings, ident, CountingHost())))
        await asyncio.gather(*(a.registered.wait() for a in agents))
        for a in agents:  # the control plane's interval is the default 2 s; the bench may ask for another
            a.status.report_interval_s = report_interval_s
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        start, reports_at_start = time.monotonic(), reports
        await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
        elapsed = time.monotonic() - start
        print(json.dumps({"reports": reports - reports_at_start, "elapsed_s": elapsed,
                          "registrations": sum(a.status.registrations for a in agents)}), flush=True)


# ------------------------------------------------------------------------------------ load


def write_bodies(directory: Path) -> tuple[list[Path], Path]:
    """Route request variants (regions and tempos spread over the fleet) and the health request."""
    rng = random.Random(2)
    routes = []
    for i in range(VARIANTS):
        _, lat, lon = REGIONS[(i * 7) % len(REGIONS)]
        message = router_pb2.RouteRequest(
            user=f"user-{i}", has_location=True, lat=lat + rng.uniform(-2, 2), lon=lon + rng.uniform(-2, 2),
            tempo_bpm=TEMPOS[i % len(TEMPOS)], piece="bench").SerializeToString()
        path = directory / f"route-{i}.bin"
        path.write_bytes(grpc_frame(message))
        routes.append(path)
    health = directory / "health.bin"
    health.write_bytes(grpc_frame(b""))  # HealthCheckRequest(service="")
    return routes, health


def h2load_cmd(url: str, body: Path, rps_per_conn: int, total_s: float, log: Path) -> list[str]:
    return ["h2load", "-n", str(int(rps_per_conn * CONNECTIONS * total_s)), "-c", str(CONNECTIONS),
            "-m", str(MAX_STREAMS), "--rps", str(rps_per_conn), "-H", "content-type: application/grpc",
            "-H", "te: trailers", "-H", f"authorization: Bearer {CLIENT}", "-d", str(body),
            f"--log-file={log}", url]


def parse_h2load(out: str) -> dict[str, int]:
    counts = {"failed": 0, "errored": 0, "timeout": 0, "non_2xx": 0}
    for line in out.splitlines():
        words = line.replace(",", "").split()
        if line.startswith("requests:"):
            counts["failed"] += int(words[words.index("failed") - 1])
            counts["errored"] += int(words[words.index("errored") - 1])
            counts["timeout"] += int(words[words.index("timeout") - 1])
        elif line.startswith("status codes:"):
            counts["non_2xx"] += sum(int(words[words.index(k) - 1]) for k in ("3xx", "4xx", "5xx"))
    return counts


def run_h2load(port: int, path: str, bodies: list[Path], rate: float, total_s: float, warmup_s: float,
               workdir: Path) -> dict[str, Any]:
    """One open-loop run of ``len(bodies)`` h2load processes at ``rate`` calls/s in all."""
    rps_per_conn = max(1, round(rate / (len(bodies) * CONNECTIONS)))
    logs = [workdir / f"log-{i}.tsv" for i in range(len(bodies))]
    for log in logs:
        log.unlink(missing_ok=True)
    procs = [subprocess.Popen(h2load_cmd(f"http://127.0.0.1:{port}{path}", body, rps_per_conn, total_s, log),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for body, log in zip(bodies, logs, strict=True)]
    started = time.monotonic()
    gen_cpu_s, counts = 0.0, {"failed": 0, "errored": 0, "timeout": 0, "non_2xx": 0}
    for proc in procs:
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"h2load failed ({proc.returncode}): {out[-500:]}")
        gen_cpu_s += usage.ru_utime + usage.ru_stime
        for k, v in parse_h2load(out).items():
            counts[k] += v
    wall_s = time.monotonic() - started
    rows = []
    for log in logs:
        for line in log.read_text().splitlines():
            start_us, http_status, duration_us = line.split("\t")[:3]
            rows.append((int(start_us), int(http_status), int(duration_us)))
    first = min(r[0] for r in rows)
    window_start = first + int(warmup_s * 1e6)
    measured = [r for r in rows if r[0] >= window_start]
    window_s = (max(r[0] for r in measured) - window_start) / 1e6 if measured else 0.0
    lat = sorted(r[2] / 1000 for r in measured if r[1] == 200)

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 3) if lat else -1.0

    return {
        "offered_rps": rps_per_conn * CONNECTIONS * len(bodies),
        "answered": len(rows), "answered_200": sum(1 for r in rows if r[1] == 200), "measured": len(measured),
        "achieved_rps": round(len(lat) / window_s, 1) if window_s else 0.0,
        "latency_ms": {"p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99), "p999": pct(0.999),
                       "max": round(lat[-1], 3) if lat else -1.0},
        "h2load": counts, "generator_cpu_cores": round(gen_cpu_s / wall_s, 3), "wall_s": round(wall_s, 2),
    }


# ------------------------------------------------------------------------------------ context


async def route_logic(edges: int) -> dict[str, Any]:
    """Dispatcher.route alone (registry of ``edges``, policy, one signed ticket, bookkeeping), no gRPC.

    Nothing reports here, so the TTL is set past the run: liveness is not what this part measures.
    """
    from control_plane.dispatch import Dispatcher, RouteQuery
    from control_plane.logs import configure_logging
    from control_plane.registry import EdgeStream, Registration, Registry
    from control_plane.settings import RegistrySettings, RoutingSettings
    from control_plane.store import Store
    from edge_node.tickets import generate_keypair

    configure_logging("json", "warning")
    rng = random.Random(3)
    with tempfile.TemporaryDirectory() as tmp:
        async with Store(Path(tmp) / "c.db") as store, Registry(RegistrySettings(max_edges=edges, ttl_s=3600), store) as reg:
            for i in range(edges):
                name, lat, lon = REGIONS[i % len(REGIONS)]
                await reg.register(Registration(
                    f"edge-{i:04d}", name, lat + rng.uniform(-1, 1), lon + rng.uniform(-1, 1), "http://h/v1/whip",
                    100_000, True, i % 2 == 0, (), "bench", "v", False, ()), EdgeStream("bench"))
            dispatcher = Dispatcher(reg, store, RoutingSettings(), generate_keypair()[0], rng)
            queries = []
            for i in range(LOGIC_ROUTES):
                _, lat, lon = REGIONS[i % len(REGIONS)]
                queries.append(RouteQuery(user=f"u{i}", lat=lat + rng.uniform(-2, 2), lon=lon + rng.uniform(-2, 2),
                                          tempo_bpm=rng.choice(TEMPOS), piece="bench"))
            for q in queries[:100]:  # compile (or load) the policy kernels first
                dispatcher.route(q)
            cpu = time.process_time()
            for q in queries:
                dispatcher.route(q)
            per_call_us = (time.process_time() - cpu) / LOGIC_ROUTES * 1e6
    return {"routes": LOGIC_ROUTES, "edges": edges, "cpu_us_per_route": round(per_call_us, 1),
            "routes_per_cpu_second": round(1e6 / per_call_us)}


async def wait_serving(addr: str, timeout_s: float = 60.0) -> None:
    """Until ``addr`` answers its health check, so the fleet does not start against nothing."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                return
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.1)


def family_pids(pid: int) -> list[int]:
    """``pid`` and its children (the control plane's route workers)."""
    pids = [pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[1] == str(pid):
                pids.append(int(stat.parent.name))
        except (OSError, IndexError):
            continue
    return pids


def cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def settled_route_counters(addr: str, timeout_s: float = 10.0) -> tuple[int, int]:
    """:func:`route_counters` once they stop moving (route workers report in batches, later when busy)."""
    last = await route_counters(addr)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await asyncio.sleep(COUNTER_SETTLE_S)
        now = await route_counters(addr)
        if now == last:
            return now
        last = now
    return last


async def route_counters(addr: str) -> tuple[int, int]:
    """(routes answered with a route or on-device, routes refused for capacity) so far."""
    async with grpc.aio.insecure_channel(addr) as channel:
        stats = await fleet_pb2_grpc.FleetAdminStub(channel).GetStats(
            fleet_pb2.GetStatsRequest(), metadata=(("authorization", f"Bearer {ADMIN}"),))
    return stats.routes_total - stats.routes_exhausted, stats.routes_exhausted


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(get: Any) -> float:
        return round(statistics.median(get(r) for r in runs), 3)

    return {
        "runs": len(runs), "offered_rps": runs[0]["offered_rps"],
        "achieved_rps": med(lambda r: r["achieved_rps"]),
        "latency_ms": {k: med(lambda r, k=k: r["latency_ms"][k]) for k in ("p50", "p90", "p99", "p999", "max")},
        "errors": med(lambda r: r["errors"]),
        "control_plane_cpu_cores": med(lambda r: r["control_plane_cpu_cores"]),
        "fleet_cpu_cores": med(lambda r: r["fleet_cpu_cores"]),
        "generator_cpu_cores": med(lambda r: r["generator_cpu_cores"]),
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    if shutil.which("h2load") is None:
        raise SystemExit("bench_route: h2load not found: apt-get install nghttp2-client (scripts/setup.sh does)")
    load_avg_start = os.getloadavg()
    logic = await route_logic(args.edges)
    port = free_port()
    addr = f"127.0.0.1:{port}"
    route_port = free_port() if args.workers else port
    state = tempfile.mkdtemp(prefix="bench-route-")
    env = {**os.environ, "SEMINOTE_CONTROL_GRPC__PORT": str(port), "SEMINOTE_CONTROL_GATEWAY__ENABLED": "false",
           "SEMINOTE_CONTROL_STATE_DIR": state, "SEMINOTE_CONTROL_LOG_LEVEL": "warning",
           "SEMINOTE_CONTROL_LOG_FORMAT": "json", "SEMINOTE_CONTROL_AUTH__ENROLLMENT_TOKENS": ENROLL,
           "SEMINOTE_CONTROL_AUTH__ADMIN_TOKENS": ADMIN, "SEMINOTE_CONTROL_AUTH__CLIENT_API_KEYS": CLIENT,
           "SEMINOTE_CONTROL_REGISTRY__MAX_EDGES": str(max(10_000, args.edges)),
           "SEMINOTE_CONTROL_ROUTING__WORKERS": str(args.workers), "SEMINOTE_CONTROL_GRPC__ROUTE_PORT": str(route_port)}
    control = await asyncio.create_subprocess_exec(sys.executable, "-m", "control_plane", "serve", env=env, cwd=ROOT)
    await wait_serving(addr)
    fleet = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "fleet", "--addr", addr, "--edges", str(args.edges),
        "--report-interval", str(args.report_interval), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, cwd=ROOT)
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        assert fleet.stdout is not None and fleet.stdin is not None
        line = await asyncio.wait_for(fleet.stdout.readline(), 300)
        if line.strip() != b"ready":
            raise RuntimeError(f"fleet did not start: {line!r}")
        async with grpc.aio.insecure_channel(addr) as channel:
            listed = await fleet_pb2_grpc.FleetAdminStub(channel).ListEdges(
                fleet_pb2.ListEdgesRequest(), metadata=(("authorization", f"Bearer {ADMIN}"),))
        serving = sum(1 for e in listed.edges if e.state == 1)
        await wait_serving(f"127.0.0.1:{route_port}")  # route workers, when there are any
        await asyncio.sleep(args.settle)  # registration burst over: reports at their steady rate
        control_pids = family_pids(control.pid)
        fleet_pids = [fleet.pid]
        work = Path(state) / "load"
        work.mkdir()
        route_bodies, health_body = write_bodies(work)
        total_s = args.warmup + args.duration
        for rep in range(args.repeat):
            for rate in args.rates:
                for kind, path, bodies in (("route", ROUTE_PATH, route_bodies),
                                           ("health", HEALTH_PATH, [health_body] * len(route_bodies))):
                    before = await settled_route_counters(addr)
                    cp0, fl0, t0 = cpu_s(control_pids), cpu_s(fleet_pids), time.monotonic()
                    run = await asyncio.to_thread(run_h2load, route_port, path, bodies, rate, total_s,
                                                  args.warmup, work)
                    elapsed = time.monotonic() - t0
                    run["control_plane_cpu_cores"] = round((cpu_s(control_pids) - cp0) / elapsed, 3)
                    run["fleet_cpu_cores"] = round((cpu_s(fleet_pids) - fl0) / elapsed, 3)
                    after = await settled_route_counters(addr)
                    transport_errors = sum(run["h2load"].values())
                    if kind == "route":
                        # answered over HTTP/2 but not a route (or on-device) by the control plane's count
                        ok_routes = after[0] - before[0]
                        run["grpc_errors"] = max(0, run["answered_200"] - ok_routes)
                        run["exhausted"] = after[1] - before[1]
                    else:
                        run["grpc_errors"] = 0
                    run["errors"] = transport_errors + run["grpc_errors"]
                    run["repeat"] = rep
                    runs.setdefault(f"{kind}@{rate:g}", []).append(run)
                    print(json.dumps({"kind": kind, "rate": rate, "repeat": rep, "achieved_rps": run["achieved_rps"],
                                      "p50": run["latency_ms"]["p50"], "p99": run["latency_ms"]["p99"],
                                      "errors": run["errors"], "cp_cores": run["control_plane_cpu_cores"],
                                      "gen_cores": run["generator_cpu_cores"]}), file=sys.stderr, flush=True)
                    await asyncio.sleep(args.pause)
        fleet.stdin.close()
        counters = json.loads(await asyncio.wait_for(fleet.stdout.readline(), 30))
    finally:
        for proc in (fleet, control):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 20)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
        shutil.rmtree(state, ignore_errors=True)
    by_rate = []
    for rate in args.rates:
        route, health = median_of(runs[f"route@{rate:g}"]), median_of(runs[f"health@{rate:g}"])
        by_rate.append({
            "offered_rps": rate, "route": route, "health_check": health,
            "route_vs_health": {
                "achieved_ratio": round(route["achieved_rps"] / health["achieved_rps"], 3) if health["achieved_rps"] else None,
                "p99_ratio": round(route["latency_ms"]["p99"] / health["latency_ms"]["p99"], 2)
                if health["latency_ms"]["p99"] > 0 else None,
                "cpu_ratio": round(route["control_plane_cpu_cores"] / health["control_plane_cpu_cores"], 2)
                if health["control_plane_cpu_cores"] else None,
            },
            "pass": (route["latency_ms"]["p99"] <= TARGET_P99_MS and route["errors"] == 0
                     and route["achieved_rps"] >= 0.99 * rate and rate >= TARGET_RPS),
        })
    return {
        "bench": "route", "command": " ".join(["python", "bench/bench_route.py", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "generator": {"tool": "h2load (nghttp2-client), open loop", "processes": VARIANTS,
                      "connections_per_process": CONNECTIONS, "max_streams_per_connection": MAX_STREAMS},
        "route_workers": args.workers,
        "fleet": {"edges": args.edges, "serving_at_start": serving, "report_interval_s": args.report_interval,
                  "load_reports_per_s": round(counters["reports"] / counters["elapsed_s"], 1),
                  "registrations": counters["registrations"]},
        "duration_s": args.duration, "warmup_s": args.warmup, "repeat": args.repeat,
        "medians": by_rate,
        "runs": runs,
        "route_logic_in_process": logic,
        "load_average": {"start": [round(x, 2) for x in load_avg_start],
                         "end": [round(x, 2) for x in os.getloadavg()]},
        "targets": {"rps": TARGET_RPS, "p99_ms": TARGET_P99_MS},
        "pass": any(r["pass"] for r in by_rate),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd")
    f = sub.add_parser("fleet", help="(internal) run the agent fleet")
    f.add_argument("--addr", required=True)
    f.add_argument("--edges", type=int, required=True)
    f.add_argument("--report-interval", type=float, required=True)
    parser.add_argument("--edges", type=int, default=1000)
    parser.add_argument("--report-interval", type=float, default=2.0, help="seconds between load reports")
    parser.add_argument("--rates", type=lambda v: [float(x) for x in v.split(",")],
                        default=[1000.0, 2000.0, TARGET_RPS, 4000.0],
                        help="comma-separated offered calls per second, one measured run each (per method, per repeat)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds fired but not measured, per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per (rate, method); the JSON has medians")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after the fleet registers, before load")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between runs")
    parser.add_argument("--workers", type=int, default=2, help="control-plane route worker processes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.cmd == "fleet":
        asyncio.run(run_fleet(args.addr, args.edges, args.report_interval))
        return 0
    result = asyncio.run(bench(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["medians"], indent=2))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
