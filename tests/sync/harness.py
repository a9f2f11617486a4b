"""Real processes for the result-sync tests: nats-server nodes, the edge producer, the ingest worker.

Every process is started with its own free port(s) and store dir under the test's tmp dir, and is
killed at the end of the test by the fixture that made it, even on failure.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import nats
import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
PRODUCER = Path(__file__).with_name("edge_producer.py")
DEPLOY_NATS = Path(__file__).resolve().parents[2] / "deploy" / "nats"
_LOOPBACK = re.compile(r"127\.0\.0\.1:(\d+)")
START_TIMEOUT_S = 20.0
READ_STREAM_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


class ManagedProcess:
    """A subprocess with its log in a file; ``kill()`` is SIGKILL, ``stop()`` SIGTERM then SIGKILL."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} already running"
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        log.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, grace_s: float = 5.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class NatsNode(ManagedProcess):
    """One ``nats-server -js`` on a fixed free port, so a restart comes back at the same address."""

    def __init__(self, root: Path, name: str, conf_text: str | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.store_dir = root / name / "js"
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.conf = root / name / "nats.conf"
        self.conf_text = conf_text
        super().__init__(name, [NATS_SERVER, "-c", str(self.conf)], root / name / "nats.log")

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def write_conf(self) -> None:
        if self.conf_text is not None:
            self.conf.write_text(self.conf_text)
            return
        self.conf.write_text("\n".join([
            f"server_name: {self.name}",
            f"listen: 127.0.0.1:{self.port}",
            f'jetstream {{ store_dir: "{self.store_dir}", max_memory_store: 64MB, max_file_store: 2GB }}',
        ]) + "\n")

    def start(self) -> None:
        self.write_conf()
        super().start()
        wait_port(self.port)


def deploy_cluster_confs(root: Path) -> list[tuple[str, str, int]]:
    """The repository's ``deploy/nats/nats-{1,2,3}.conf`` with every loopback port replaced by a free
    one (the same replacement in all three files) and each store dir moved under ``root``.
    Returns (node name, config text, client port) per node."""
    texts = [(DEPLOY_NATS / f"nats-{i}.conf").read_text() for i in range(1, 4)]
    ports = sorted({int(p) for t in texts for p in _LOOPBACK.findall(t)})
    mapping = {p: free_port() for p in ports}
    out: list[tuple[str, str, int]] = []
    for i, text in enumerate(texts, start=1):
        name = f"nats-{i}"
        listen = int(re.search(r"^listen: 127\.0\.0\.1:(\d+)", text, re.M).group(1))  # type: ignore[union-attr]
        text = _LOOPBACK.sub(lambda m: f"127.0.0.1:{mapping[int(m.group(1))]}", text)
        text = re.sub(r'store_dir: "[^"]*"', f'store_dir: "{root / name / "js"}"', text)
        out.append((name, text, mapping[listen]))
    return out


def start_cluster(root: Path) -> list[NatsNode]:
    """The 3-node cluster of ``deploy/nats/`` on free loopback ports."""
    nodes = [NatsNode(root, name, conf_text=text, port=port) for name, text, port in deploy_cluster_confs(root)]
    for node in nodes:
        node.write_conf()
        ManagedProcess.start(node)
    for node in nodes:
        wait_port(node.port)
    return nodes


@dataclass
class SyncRig:
    """Where one end-to-end run lives: NATS URLs, the edge's outbox, the progress store."""

    root: Path
    nats_urls: list[str]
    sessions: int
    results_per_session: int
    rate_per_s: float
    duplicate_window_s: float = 120.0
    replicas: int = 1
    edge_id: str = "edge-t1"
    outbox: Path = field(init=False)
    db: Path = field(init=False)
    edge: ManagedProcess = field(init=False)
    ingest: ManagedProcess = field(init=False)

    def __post_init__(self) -> None:
        self.outbox = self.root / "edge" / "outbox.db"
        self.db = self.root / "cloud" / "progress.db"
        self.outbox.parent.mkdir(parents=True, exist_ok=True)
        self.db.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        nats_args = [a for url in self.nats_urls for a in ("--nats", url)]
        self.edge = ManagedProcess("edge", [
            sys.executable, str(PRODUCER), "--outbox", str(self.outbox), "--edge-id", self.edge_id,
            "--sessions", str(self.sessions), "--results", str(self.results_per_session),
            "--rate", str(self.rate_per_s), *nats_args,
        ], self.root / "edge.log", env)
        self.ingest = ManagedProcess("ingest", [
            sys.executable, "-m", "control_plane.ingest", "--db", str(self.db), *nats_args,
            "--replicas", str(self.replicas), "--duplicate-window-s", str(self.duplicate_window_s),
            "--ack-wait-s", "5",
        ], self.root / "ingest.log", env)

    @property
    def expected_results(self) -> int:
        return self.sessions * self.results_per_session

    def stop_all(self) -> None:
        for p in (self.edge, self.ingest):
            p.kill()

    # -- observing the store ------------------------------------------------------------------------

    def stored(self) -> tuple[int, int]:
        """(results stored, summaries stored); (0, 0) before the store exists."""
        if not self.db.exists():
            return 0, 0
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            results = conn.execute("SELECT COUNT(*) FROM performances").fetchone()[0]
            summaries = conn.execute("SELECT COUNT(*) FROM analysis_results").fetchone()[0]
            return int(results), int(summaries)
        except sqlite3.OperationalError:
            return 0, 0
        finally:
            conn.close()

    def outbox_produced(self) -> int:
        """Results the edge has written to its outbox so far (its local record)."""
        if not self.outbox.exists():
            return 0
        conn = sqlite3.connect(f"file:{self.outbox}?mode=ro", uri=True, timeout=10)
        try:
            return int(conn.execute("SELECT COALESCE(SUM(results_recorded), 0) FROM local_sessions")
                       .fetchone()[0])
        except sqlite3.OperationalError:
            return 0
        finally:
            conn.close()

    async def wait_produced(self, results: int, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.outbox_produced() < results:
            if time.monotonic() > deadline:
                raise TimeoutError(f"edge produced {self.outbox_produced()} < {results}\n{self.edge.log_tail()}")
            await asyncio.sleep(0.05)

    async def wait_stored(self, timeout_s: float = 120.0) -> None:
        """Wait until every result and summary is in the store (or fail with the logs)."""
        deadline = time.monotonic() + timeout_s
        want = (self.expected_results, self.sessions)
        while self.stored() != want:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"stored {self.stored()} != expected {want}\n--- edge\n{self.edge.log_tail()}"
                    f"\n--- ingest\n{self.ingest.log_tail()}"
                )
            await asyncio.sleep(0.2)

    def audit(self) -> Audit:
        """Counts over the whole store: what arrived, how often, in which order."""
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            keys = conn.execute(
                "SELECT p.session_id, p.seq, m.ingest_order FROM performances p"
                " JOIN ingested_messages m ON m.msg_id = p.msg_id ORDER BY m.ingest_order, p.seq"
            ).fetchall()
            carried = int(conn.execute("SELECT COALESCE(SUM(results), 0) FROM ingested_messages")
                          .fetchone()[0])
            summaries = int(conn.execute("SELECT COUNT(*) FROM analysis_results").fetchone()[0])
            counted = {str(s): int(n) for s, n in conn.execute(
                "SELECT session_id, results_count FROM practice_sessions").fetchall()}
        finally:
            conn.close()
        per_session: dict[str, list[int]] = defaultdict(list)
        for session_id, seq, _ in keys:
            per_session[str(session_id)].append(int(seq))
        return Audit(len(keys), carried, summaries, dict(per_session), counted)


@dataclass
class Audit:
    results: int
    results_carried_by_messages: int  # > results would mean the same result came in two messages
    summaries: int
    arrival_seqs: dict[str, list[int]]  # per session: seqs in the order the ingest first stored them
    session_counts: dict[str, int]

    def missing_or_extra(self, sessions: int, per_session: int) -> list[str]:
        problems: list[str] = []
        for i in range(sessions):
            sid = session_name(i)
            want = [result_seq(j) for j in range(per_session)]
            got = sorted(self.arrival_seqs.get(sid, []))
            if got != want:
                problems.append(f"{sid}: {len(got)} stored, {len(set(want) - set(got))} missing")
        return problems

    def arrival_reorders(self) -> int:
        """Results stored after a later result of the same session (ingest redelivery order)."""
        return sum(
            sum(1 for a, b in zip(seqs, seqs[1:], strict=False) if b < a)
            for seqs in self.arrival_seqs.values()
        )


def session_name(i: int) -> str:
    return f"s{i:04d}"


def result_seq(j: int) -> int:
    """The j-th synced result of a session has seq 2j+1: the producer interleaves an unsynced event."""
    return 2 * j + 1


async def stream_leader(nats_urls: list[str], stream: str = "SEMINOTE_RESULTS") -> tuple[str, int]:
    """The server name of the stream's current leader in a cluster, and the stream's replicas."""
    nc = await nats.connect(servers=nats_urls, connect_timeout=2)
    try:
        js = nc.jetstream()
        for _ in range(int(START_TIMEOUT_S / 0.1)):  # the ingest may still be creating the stream
            try:
                info = await js.stream_info(stream)
                if info.cluster is not None and info.cluster.leader:
                    return str(info.cluster.leader), int(info.config.num_replicas or 0)
            except nats.errors.Error:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"stream {stream} has no leader after {START_TIMEOUT_S}s")
    finally:
        await nc.close()


async def stream_order_violations(nats_urls: list[str], stream: str = "SEMINOTE_RESULTS") -> tuple[int, int, int]:
    """Read the whole results stream: (messages, duplicate results, per-session order violations).

    A duplicate is a result carried again by a later message (a re-publish past the dedup window);
    an order violation is a result whose first appearance comes after a higher seq of its session.
    """
    import json

    nc = await nats.connect(servers=nats_urls, connect_timeout=2)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        total = info.state.messages
        deadline = time.monotonic() + READ_STREAM_TIMEOUT_S
        while True:
            try:
                sub = await js.pull_subscribe("seminote.results.>", durable=None, stream=stream,
                                              config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL,
                                                                    ack_policy=AckPolicy.NONE))
                break
            except nats.errors.TimeoutError:
                # A cluster that just lost a node may place the new consumer on it: ask again.
                if time.monotonic() > deadline:
                    raise
        seen: set[tuple[str, int]] = set()
        last: dict[str, int] = {}
        duplicates = violations = got = 0
        while got < total:
            try:
                batch = await sub.fetch(min(500, total - got), timeout=5)
            except nats.errors.TimeoutError:
                # A cluster that just lost a node can be slow to serve a new consumer: keep asking.
                if time.monotonic() > deadline:
                    raise AssertionError(f"read {got} of {total} stream messages") from None
                continue
            for msg in batch:
                got += 1
                body = json.loads(msg.data)
                sid = body["session_id"]
                for e in body.get("events", []):
                    key = (sid, e["seq"])
                    if key in seen:
                        duplicates += 1
                        continue
                    seen.add(key)
                    if e["seq"] < last.get(sid, -1):
                        violations += 1
                    last[sid] = max(last.get(sid, -1), e["seq"])
        await sub.unsubscribe()
        return total, duplicates, violations
    finally:
        await nc.close()
