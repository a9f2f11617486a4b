"""A real edge agent in its own process (for SIGKILL/SIGSTOP tests): registers, reports, serves sessions.

Usage: python edge_agent_proc.py ADDR EDGE_ID LAT LON [SESSIONS]. Prints ``registered`` once registered.
"""

from __future__ import annotations

import asyncio
import sys

from control_plane.logs import configure_logging
from edge_node.agent import AgentSession, EdgeAgent, EdgeIdentity, MemoryHost
from edge_node.settings import ControlAgentSettings

ENROLL = "enroll-token-0123456789"


async def main(addr: str, edge_id: str, lat: float, lon: float, sessions: int) -> None:
    host = MemoryHost()
    for i in range(sessions):
        host.sessions[f"{edge_id}-s{i}"] = AgentSession(f"{edge_id}-s{i}", user=f"user{i}")
    settings = ControlAgentSettings(addr=addr, enrollment_token=ENROLL, backoff_initial_s=0.1, backoff_max_s=1.0)
    ident = EdgeIdentity(edge_id, "eu-west", lat, lon, f"http://127.0.0.1:1/{edge_id}/v1/whip", 1000)
    async with EdgeAgent(settings, ident, host) as agent:
        await agent.registered.wait()
        print("registered", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    configure_logging("json")  # logs on stderr; stdout carries only "registered"
    a = sys.argv[1:]
    asyncio.run(main(a[0], a[1], float(a[2]), float(a[3]), int(a[4]) if len(a) > 4 else 0))
