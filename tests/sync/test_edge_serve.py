"""A live session on a real ``seminote-edge serve`` (sync enabled) reaches the progress store.

Processes: nats-server, the ingest worker, ``seminote-edge serve``, and ``seminote-edge client``
streaming a WAV of six tones over WebRTC. Every note event the client received must be in the store
with the same seq, and nothing that is not a note/score result may be there.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import wave
from pathlib import Path

import numpy as np

from edge_node.tickets import generate_keypair, private_key_pem

from .harness import ManagedProcess, NatsNode

SAMPLE_RATE_HZ = 48_000
TONES_HZ = (440.0, 523.25, 659.25, 783.99, 440.0, 587.33)
TONE_S = 0.45
GAP_S = 0.1
START_TIMEOUT_S = 60.0
CLIENT_TIMEOUT_S = 60.0


def write_tones(path: Path) -> None:
    parts = []
    for f in TONES_HZ:
        t = np.arange(int(TONE_S * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
        parts += [0.5 * np.exp(-3 * t) * np.minimum(1, 200 * t) * np.sin(2 * np.pi * f * t),
                  np.zeros(int(GAP_S * SAMPLE_RATE_HZ))]
    x = np.concatenate([*parts, np.zeros(SAMPLE_RATE_HZ // 2)])
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE_HZ)
        w.writeframes((x * 32767).astype("<i2").tobytes())


async def edge_url(edge: ManagedProcess) -> str:
    for _ in range(int(START_TIMEOUT_S / 0.1)):
        for line in edge.log_path.read_text(errors="replace").splitlines():
            if '"edge listening"' in line:
                return str(json.loads(line)["url"])
        assert edge.running, edge.log_tail()
        await asyncio.sleep(0.1)
    raise AssertionError(f"edge did not start\n{edge.log_tail()}")


def stored_results(db: Path) -> list[tuple[str, int]]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return [(str(t), int(s)) for t, s in conn.execute("SELECT type, seq FROM performances ORDER BY seq")]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


async def test_served_edge_syncs_a_live_sessions_notes_to_the_progress_store(
    tmp_path: Path, nats_node: NatsNode, processes: list[ManagedProcess]
) -> None:
    wav = tmp_path / "tones.wav"
    write_tones(wav)
    key_file = tmp_path / "ticket.pem"
    key_file.write_text(private_key_pem(generate_keypair()[0]))
    db = tmp_path / "progress.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SEMINOTE_EDGE_EDGE_ID": "edge-serve",
           "SEMINOTE_EDGE_SERVER__TICKET_PRIVATE_KEY": str(key_file),
           "SEMINOTE_EDGE_SYNC__ENABLED": "true", "SEMINOTE_EDGE_SYNC__NATS_URLS": json.dumps([nats_node.url]),
           "SEMINOTE_EDGE_SYNC__OUTBOX_PATH": str(tmp_path / "outbox.db"),
           "SEMINOTE_EDGE_SYNC__FLUSH_INTERVAL_MS": "50"}
    ingest = ManagedProcess("ingest", [sys.executable, "-m", "control_plane.ingest", "--nats", nats_node.url,
                                       "--db", str(db)], tmp_path / "ingest.log", env)
    edge = ManagedProcess("edge", [sys.executable, "-m", "edge_node", "serve", "--port", "0",
                                   "--log-format", "json"], tmp_path / "edge.log", env)
    processes += [ingest, edge]
    ingest.start()
    edge.start()
    url = await edge_url(edge)

    exe = [sys.executable, "-m", "edge_node"]
    minting = await asyncio.create_subprocess_exec(
        *exe, "ticket", "--ttl", "60", "--user", "tone-user", env=env, stdout=asyncio.subprocess.PIPE)
    ticket = (await asyncio.wait_for(minting.communicate(), CLIENT_TIMEOUT_S))[0].decode().strip()
    assert minting.returncode == 0 and ticket.startswith("snt1.")
    client = await asyncio.create_subprocess_exec(
        *exe, "client", str(wav), "--whip", url + "v1/whip", "--ticket", ticket, "--tail", "0.2",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(client.communicate(), CLIENT_TIMEOUT_S)
    assert client.returncode == 0, err.decode()
    received = [json.loads(line) for line in out.decode().splitlines()]
    notes = [("note", e["seq"]) for e in received if e["type"] == "note"]
    assert len(notes) >= 6, "the tones should give at least one note event each"

    for _ in range(200):
        stored = stored_results(db)
        if set(notes) <= set(stored):
            break
        await asyncio.sleep(0.1)
    assert set(notes) <= set(stored), f"missing {sorted(set(notes) - set(stored))}\n{ingest.log_tail()}"
    assert {t for t, _ in stored} <= {"note", "score"}
    assert len(stored) == len(set(stored))

    edge.stop(grace_s=20)
    assert edge.proc is not None and edge.proc.returncode == 0, edge.log_tail()
    conn = sqlite3.connect(tmp_path / "outbox.db")
    try:
        left = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        recorded = conn.execute("SELECT results_recorded, user_id FROM local_sessions").fetchall()
    finally:
        conn.close()
    assert left == 0  # the edge flushed and published everything before it exited
    assert recorded == [(len(stored_results(db)), "tone-user")]
