"""``seminotectl`` as a real subprocess against a real control plane with a real agent."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from control_plane.app import ControlPlane
from edge_node.agent import AgentSession, MemoryHost

from .conftest import ADMIN, CLIENT, identity, make_agent, wait_until

CTL_TIMEOUT_S = 60


async def ctl(port: int, *args: str, token: str | None = ADMIN) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SEMINOTE_TOKEN", "SEMINOTE_CONTROL_ADDR")}
    env["SEMINOTE_CONTROL_ADDR"] = f"127.0.0.1:{port}"
    if token:
        env["SEMINOTE_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; from control_plane.ctl import main; sys.exit(main())", *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), CTL_TIMEOUT_S)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_edges_sessions_route_stats_and_drain_with_progress(control: ControlPlane) -> None:
    port = control.port or 0
    host = MemoryHost()
    host.sessions["s-1"] = AgentSession("s-1", user="ann", mode="detailed", piece="etude")
    async with make_agent(port, identity("edge-x", capacity=8), host) as agent:
        await asyncio.wait_for(agent.registered.wait(), 5)
        rc, out, _ = await ctl(port, "edges", "list")
        assert rc == 0
        header, row = out.splitlines()[:2]
        assert header.split()[:4] == ["EDGE", "REGION", "STATE", "SESSIONS"]
        assert row.split()[:4] == ["edge-x", "eu-west", "serving", "1/8"]

        rc, out, _ = await ctl(port, "edges", "show", "edge-x", "-o", "json")
        assert rc == 0 and json.loads(out)["state"] == "serving" and json.loads(out)["capacity"] == 8

        rc, out, _ = await ctl(port, "-o", "json", "route", "--user", "bo", "--lat", "48", "--lon", "2",
                               "--tempo", "45", token=CLIENT)
        assert rc == 0, out
        routed = json.loads(out)
        assert routed["edge_id"] == "edge-x" and routed["mode"] == "detailed" and routed["ticket"].startswith("snt1.")

        rc, out, _ = await ctl(port, "sessions", "list", "-o", "json")
        assert rc == 0
        sessions = {s["session_id"]: s for s in json.loads(out)["sessions"]}
        assert sessions["s-1"]["state"] == "active" and sessions["s-1"]["user"] == "ann"
        assert sessions[routed["session_id"]]["state"] == "routed"

        rc, out, _ = await ctl(port, "stats", "-o", "json")
        stats = json.loads(out)
        assert rc == 0 and stats["edges"] == 1 and stats["routes_total"] == 1 and stats["sessions"] == 1

        # Destructive commands need --yes when not at a terminal.
        rc, _, err = await ctl(port, "edges", "cordon", "edge-x")
        assert rc == 2 and "--yes" in err
        assert control.registry is not None and not control.registry.edges["edge-x"].cordoned
        rc, _, _ = await ctl(port, "edges", "cordon", "edge-x", "--yes")
        assert rc == 0 and control.registry.edges["edge-x"].cordoned
        rc, _, _ = await ctl(port, "edges", "uncordon", "edge-x")
        assert rc == 0 and not control.registry.edges["edge-x"].cordoned

        # Drain blocks, shows progress, and returns once the edge's last session has ended.
        drain = asyncio.create_task(ctl(port, "edges", "drain", "edge-x", "--yes", "--timeout", "30"))
        await wait_until(lambda: host.drain_deadline is not None, timeout_s=20)
        await asyncio.sleep(1.0)
        host.sessions.clear()
        rc, out, err = await drain
        assert rc == 0, err
        assert "draining edge-x: 1 session(s) left" in err and "drained edge-x" in err
        assert control.registry.edges["edge-x"].state.value == "drained"


async def test_errors_exit_one_and_usage_exits_two(control: ControlPlane) -> None:
    port = control.port or 0
    rc, _, err = await ctl(port, "edges", "show", "missing")
    assert rc == 1 and "NOT_FOUND" in err
    rc, _, err = await ctl(port, "edges", "list", token="wrong-token-wrong-token")
    assert rc == 1 and "UNAUTHENTICATED" in err
    rc, _, err = await ctl(port, "edges", "list", token=None)
    assert rc == 2 and "token" in err
    rc, _, _ = await ctl(port, "edges", "frobnicate")
    assert rc == 2
    rc, _, err = await ctl(port, "route", "--user", "u", "--lat", "1")
    assert rc == 2
