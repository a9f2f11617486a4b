"""Route throughput and latency while a large fleet reports load.

Three processes, as in production: the control plane (``python -m control_plane serve``), a fleet of
``--edges`` real edge agents (``EdgeAgent`` + in-memory host, one Connect stream each, load reports
every ``--report-interval`` seconds), and this process as an open-loop load generator: Route calls are
fired at ``--rate`` per second regardless of how fast answers come (so an overloaded server shows up
as latency, not as a politely lower rate), from clients spread over the fleet's regions. Latency is
measured per call, from the moment it was due to its answer.

    python bench/bench_route.py                    # 500, 1,000, 2,000, 3,000 Route/s, 1,000 edges → bench/results/route.json
    python bench/bench_route.py --rates 4000 --duration 10

Past capacity, gRPC's server overload protection resets new calls (CANCELLED) and the generator sheds
calls beyond MAX_IN_FLIGHT; both count as errors. Also measured, for context: the route logic alone in-process (CPU per route, no gRPC), and the same
client machinery against the server's trivial health Check (the gRPC transport's ceiling on this box).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import signal
import socket
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
TICK_S = 0.002  # the generator fires the calls due every 2 ms
CHANNELS = 4
MAX_IN_FLIGHT = 2000
REQUEST_VARIETY = 4096
FLOOR_CALLS = 6000
FLOOR_CONCURRENCY = 64
LOGIC_ROUTES = 20_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


async def generate(addr: str, rate: float, duration_s: float, warmup_s: float) -> dict[str, Any]:
    channels = [grpc.aio.insecure_channel(addr) for _ in range(CHANNELS)]
    # Pre-serialised requests, raw bytes both ways: the harness should spend its CPU on calls, not protobuf.
    calls = [c.unary_unary("/seminote.v1.Router/Route") for c in channels]
    md = (("authorization", f"Bearer {CLIENT}"),)
    rng = random.Random(2)
    requests = []
    for i in range(REQUEST_VARIETY):
        _, lat, lon = REGIONS[i % len(REGIONS)]
        requests.append(router_pb2.RouteRequest(
            user=f"user-{i}", has_location=True, lat=lat + rng.uniform(-2, 2), lon=lon + rng.uniform(-2, 2),
            tempo_bpm=rng.choice((45.0, 90.0, 100.0)), piece="bench").SerializeToString())
    latencies: list[float] = []
    errors: dict[str, int] = {}
    error_details: dict[str, str] = {}
    in_flight: set[asyncio.Task[None]] = set()

    async def one(i: int, due: float, measured: bool) -> None:
        try:
            reply = await calls[i % CHANNELS](requests[i % REQUEST_VARIETY], metadata=md, timeout=5)
        except grpc.aio.AioRpcError as exc:
            errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
            error_details.setdefault(exc.code().name, f"{exc.details()} (after {time.perf_counter() - due:.3f} s)")
            return
        if not reply:
            errors["EMPTY_REPLY"] = errors.get("EMPTY_REPLY", 0) + 1
            return
        if measured:
            latencies.append(time.perf_counter() - due)

    start = time.perf_counter()
    total_s = warmup_s + duration_s
    sent = sent_measured = shed = 0
    while True:
        now = time.perf_counter()
        elapsed = now - start
        if elapsed >= total_s:
            break
        due_count = int(elapsed * rate) + 1 - sent  # call k is due at k / rate
        for _ in range(due_count):
            due = start + sent / rate
            measured = sent / rate >= warmup_s
            sent_measured += measured
            if len(in_flight) >= MAX_IN_FLIGHT:  # the server is far behind: count the call as failed
                shed += measured
            else:
                task = asyncio.create_task(one(sent, due, measured), name=f"route-{sent}")
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            sent += 1
        await asyncio.sleep(TICK_S)
    await asyncio.gather(*list(in_flight))
    wall_s = time.perf_counter() - start - warmup_s
    for c in channels:
        await c.close()
    latencies.sort()

    def pct(p: float) -> float:
        return round(1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))], 3) if latencies else -1.0

    if shed:
        errors["SHED_CLIENT_SIDE"] = shed
    return {"target_rps": rate, "sent": sent_measured, "ok": len(latencies), "first_error": error_details,
            "achieved_rps": round(len(latencies) / wall_s, 1), "errors": errors,
            "latency_ms": {"p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99), "p999": pct(0.999),
                           "max": round(1000 * latencies[-1], 3) if latencies else -1.0}}


async def grpc_floor(addr: str) -> dict[str, Any]:
    """The same client machinery against the server's trivial health Check: the transport's ceiling here."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    channels = [grpc.aio.insecure_channel(addr) for _ in range(CHANNELS)]
    stubs = [health_pb2_grpc.HealthStub(c) for c in channels]
    request = health_pb2.HealthCheckRequest()
    done = 0

    async def worker(k: int) -> None:
        nonlocal done
        while done < FLOOR_CALLS:
            done += 1
            await stubs[k % CHANNELS].Check(request, timeout=5)

    start = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(FLOOR_CONCURRENCY)))
    elapsed = time.perf_counter() - start
    for c in channels:
        await c.close()
    return {"calls": FLOOR_CALLS, "concurrency": FLOOR_CONCURRENCY, "rps": round(FLOOR_CALLS / elapsed, 1)}


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
                                          tempo_bpm=rng.choice((45.0, 90.0, 100.0)), piece="bench"))
            cpu = time.process_time()
            for q in queries:
                dispatcher.route(q)
            per_call_us = (time.process_time() - cpu) / LOGIC_ROUTES * 1e6
    return {"routes": LOGIC_ROUTES, "edges": edges, "cpu_us_per_route": round(per_call_us, 1),
            "routes_per_cpu_second": round(1e6 / per_call_us)}


async def wait_serving(addr: str, timeout_s: float = 60.0) -> None:
    """Until the control plane answers its health check, so the fleet does not start against nothing."""
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


def proc_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` and its live children (the control plane's route workers)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    load_avg = os.getloadavg()[0]
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
        runs = []
        for rate in args.rates:
            cpu0, t0, own0 = proc_cpu_s(control.pid), time.monotonic(), time.process_time()
            load = await generate(f"127.0.0.1:{route_port}", rate, args.duration, args.warmup)
            elapsed = time.monotonic() - t0
            load["control_plane_cpu_cores"] = round((proc_cpu_s(control.pid) - cpu0) / elapsed, 3)
            load["generator_cpu_cores"] = round((time.process_time() - own0) / elapsed, 3)
            load["pass"] = (load["latency_ms"]["p99"] <= TARGET_P99_MS and not load["errors"]
                            and load["achieved_rps"] >= TARGET_RPS)
            runs.append(load)
            await asyncio.sleep(2.0)  # let the backlog of one run clear before the next
        floor = await grpc_floor(f"127.0.0.1:{route_port}")
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
    return {
        "bench": "route", "command": " ".join(["python", "bench/bench_route.py", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "route_workers": args.workers,
        "fleet": {"edges": args.edges, "serving_at_start": serving, "report_interval_s": args.report_interval,
                  "load_reports_per_s": round(counters["reports"] / counters["elapsed_s"], 1),
                  "registrations": counters["registrations"]},
        "route_runs": runs,
        "route_logic_in_process": logic,
        "grpc_floor_health_check": floor,
        "load_average_1m": {"start": round(load_avg, 2), "end": round(os.getloadavg()[0], 2)},
        "targets": {"rps": TARGET_RPS, "p99_ms": TARGET_P99_MS},
        "pass": any(r["pass"] for r in runs),
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
    parser.add_argument("--rates", type=lambda v: [float(x) for x in v.split(",")], default=[500.0, 1000.0, 2000.0, TARGET_RPS],
                        help="comma-separated Route calls per second to fire, one measured run each")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds fired but not measured")
    parser.add_argument("--workers", type=int, default=0, help="control-plane route worker processes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.cmd == "fleet":
        asyncio.run(run_fleet(args.addr, args.edges, args.report_interval))
        return 0
    result = asyncio.run(bench(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
