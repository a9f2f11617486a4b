"""Leaks: 300 real sessions opened and closed against a served edge (its own process), a third of them
torn down abruptly (the peer closes, no DELETE). Afterwards the edge reports 0 sessions, its task and
thread counts are back to baseline and its resident memory grew by less than 30 MB."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator

import aiohttp
import numpy as np
import pytest
from conftest import served_edge

from edge_node.client import FileAudioTrack, PracticeClient
from edge_node.tickets import TicketClaims, mint_ticket, private_key_pem

N_SESSIONS = 300
BATCH = 25
RSS_GROWTH_LIMIT_BYTES = 30 * 1024 * 1024

pytestmark = pytest.mark.slow


@pytest.fixture
def leak_edge(tmp_path, ticket_key) -> Iterator[str]:
    key = tmp_path / "ticket.pem"
    key.write_text(private_key_pem(ticket_key))
    with served_edge({
        "SEMINOTE_EDGE_EDGE_ID": "edge-leak", "SEMINOTE_EDGE_SERVER__TICKET_PRIVATE_KEY": str(key),
        "SEMINOTE_EDGE_SERVER__MAX_SESSIONS": str(2 * BATCH), "SEMINOTE_EDGE_SERVER__MEDIA_TIMEOUT_S": "1.5",
        "SEMINOTE_EDGE_SERVER__START_TIMEOUT_S": "5", "SEMINOTE_EDGE_SERVER__WATCHDOG_INTERVAL_S": "0.25",
        "SEMINOTE_EDGE_SERVER__OVERLOAD_LAG_MS": "0",
    }) as (_, url):
        yield url


async def scrape(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with http.get(url + "metrics") as r:
        text = await r.text()
    names = ("seminote_edge_sessions", "seminote_edge_asyncio_tasks", "seminote_edge_threads",
             "process_resident_memory_bytes", "seminote_edge_sessions_opened_total")
    out = {}
    for name in names:
        m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
        assert m, name
        out[name] = float(m.group(1))
    return out


async def one_session(url: str, ticket: str, abrupt: bool) -> int:
    tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(9600) / 48000)).astype(np.float32)
    client = PracticeClient(url + "v1/whip", ticket, FileAudioTrack(tone, tail_s=2.0))
    try:
        await client.start()
        await client.wait_for(lambda e: "seq" in e, 20)
        return len(client.events)
    finally:
        await client.aclose(delete=not abrupt)


async def test_300_sessions_leave_nothing_behind(leak_edge: str, ticket_key) -> None:
    url = leak_edge
    counter = 0

    def ticket() -> str:
        nonlocal counter
        counter += 1
        now = time.time()
        return mint_ticket(ticket_key, TicketClaims(f"leak-{counter}", "leak", "edge-leak", exp=now + 300, iat=now))

    async with aiohttp.ClientSession() as http:
        async def settle() -> dict[str, float]:
            deadline = time.monotonic() + 20
            while True:
                m = await scrape(http, url)
                if m["seminote_edge_sessions"] == 0 or time.monotonic() > deadline:
                    return m
                await asyncio.sleep(0.25)

        # Warm-up batch: first use loads codecs, pools and caches; the baseline is taken after it.
        await asyncio.gather(*(one_session(url, ticket(), abrupt=i % 3 == 0) for i in range(BATCH)))
        await asyncio.sleep(1.0)
        baseline = await settle()
        assert baseline["seminote_edge_sessions"] == 0

        started = time.monotonic()
        for b in range(N_SESSIONS // BATCH):
            results = await asyncio.gather(
                *(one_session(url, ticket(), abrupt=i % 3 == 0) for i in range(BATCH)), return_exceptions=True
            )
            failures = [r for r in results if isinstance(r, BaseException)]
            assert not failures, f"batch {b}: {failures[:3]}"
        elapsed = time.monotonic() - started

        after = await settle()
        # Teardown finishes asynchronously (SCTP/ICE timers, the reaper): a leak stays, the rest goes.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(
            after[k] != baseline[k] for k in ("seminote_edge_asyncio_tasks", "seminote_edge_threads")
        ):
            await asyncio.sleep(0.5)
            after = await scrape(http, url)
    assert after["seminote_edge_sessions"] == 0
    assert after["seminote_edge_sessions_opened_total"] == N_SESSIONS + BATCH
    assert after["seminote_edge_asyncio_tasks"] == baseline["seminote_edge_asyncio_tasks"]
    assert after["seminote_edge_threads"] == baseline["seminote_edge_threads"]
    growth = after["process_resident_memory_bytes"] - baseline["process_resident_memory_bytes"]
    print(f"\n{N_SESSIONS} sessions in {elapsed:.1f} s; tasks {baseline['seminote_edge_asyncio_tasks']:.0f} -> "
          f"{after['seminote_edge_asyncio_tasks']:.0f}; threads {baseline['seminote_edge_threads']:.0f} -> "
          f"{after['seminote_edge_threads']:.0f}; RSS growth {growth / 1e6:.1f} MB")
    assert growth < RSS_GROWTH_LIMIT_BYTES
