"""The real daemons under a real ``NOTIFY_SOCKET``: READY=1 once they serve, WATCHDOG=1 at half of
``WATCHDOG_USEC`` from their event loops, STATUS= lines, and on SIGTERM STOPPING=1 and exit 0. Bad
settings stop them with one line per wrong setting and exit 2."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import urllib.request
from pathlib import Path

from edge_node.tickets import generate_keypair, private_key_pem

from .conftest import START_TIMEOUT_S, Daemon, free_port, spawn

WATCHDOG_USEC = 300_000  # pings expected every 150 ms
OBSERVE_S = 1.5
STOP_TIMEOUT_S = 30.0
HTTP_TIMEOUT_S = 10.0
TOKEN = "deploy-test-token-0123456789"


def edge_env(tmp_path: Path) -> dict[str, str]:
    key = tmp_path / "ticket.pem"
    key.write_text(private_key_pem(generate_keypair()[0]))
    return {"SEMINOTE_EDGE_SERVER__TICKET_PRIVATE_KEY": str(key), "SEMINOTE_EDGE_EDGE_ID": "edge-deploy"}


def control_env(tmp_path: Path, metrics_port: int) -> dict[str, str]:
    return {"SEMINOTE_CONTROL_STATE_DIR": str(tmp_path / "cp"), "SEMINOTE_CONTROL_GRPC__PORT": "0",
            "SEMINOTE_CONTROL_GATEWAY__ENABLED": "false", "SEMINOTE_CONTROL_LOG_FORMAT": "json",
            "SEMINOTE_CONTROL_AUTH__ENROLLMENT_TOKENS": TOKEN, "SEMINOTE_CONTROL_AUTH__ADMIN_TOKENS": TOKEN,
            "SEMINOTE_CONTROL_AUTH__CLIENT_API_KEYS": TOKEN,
            "SEMINOTE_CONTROL_METRICS__PORT": str(metrics_port)}


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def edge_url(d: Daemon) -> str:
    for line in d.log_lines():
        if line.get("event") == "edge listening":
            return str(line["url"]).rstrip("/")
    raise AssertionError(d.log_tail())


def assert_watchdog_pings(d: Daemon) -> None:
    start = len(d.messages)
    d.collect(OBSERVE_S)
    pings = [t for t, m in d.messages[start:] if "WATCHDOG=1" in m.split("\n")]
    assert len(pings) >= 5, d.messages[start:]
    gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
    assert 0.08 <= statistics.median(gaps) <= 0.3, gaps  # half of WATCHDOG_USEC, give or take a busy box


def assert_stops_cleanly(d: Daemon) -> None:
    d.signal()
    d.wait_for("STOPPING=1", STOP_TIMEOUT_S)
    assert d.proc is not None
    assert d.proc.wait(STOP_TIMEOUT_S) == 0, d.log_tail()
    d.collect(0.2)  # what it sent after STOPPING=1 is queued on the socket
    assert any(f.startswith("EXTEND_TIMEOUT_USEC=") for f in d.fields())  # the stop asked for its time


def test_edge_serve_notifies_ready_watchdog_status_and_stopping(tmp_path: Path, daemons: list[Daemon]) -> None:
    d = spawn(daemons, "edge", ["edge_node", "serve", "--port", "0", "--log-format", "json"], edge_env(tmp_path),
              tmp_path, watchdog_usec=WATCHDOG_USEC, abstract=True)
    d.wait_for("READY=1", START_TIMEOUT_S)
    url = edge_url(d)  # READY comes after the listener is up
    assert http_get(url + "/readyz")[0] == 200
    assert "STATUS=serving 0 sessions" in d.fields()
    assert_watchdog_pings(d)
    status, metrics = http_get(url + "/metrics")
    assert status == 200 and "seminote_edge_accepting 1.0" in metrics
    assert_stops_cleanly(d)
    assert any(f.startswith("STATUS=draining: 0 sessions left") for f in d.fields())
    assert "NOTIFY_SOCKET" not in d.log_path.read_text()  # nothing leaked into the logs


def test_control_serve_notifies_and_serves_metrics(tmp_path: Path, daemons: list[Daemon]) -> None:
    port = free_port()
    d = spawn(daemons, "control", ["control_plane", "serve"], control_env(tmp_path, port), tmp_path,
              watchdog_usec=WATCHDOG_USEC)
    d.wait_for("READY=1", START_TIMEOUT_S)
    assert "STATUS=no edges; 0 routes" in d.fields()
    assert_watchdog_pings(d)
    status, metrics = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    for line in ('seminote_control_edges{state="serving"} 0.0', 'seminote_control_routes_total{outcome="routed"} 0.0',
                 "seminote_control_capacity_sessions 0.0", "process_resident_memory_bytes"):
        assert line in metrics, metrics
    assert_stops_cleanly(d)


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SEMINOTE_")}
    return subprocess.run([sys.executable, "-m", *args], env={**clean, **env}, capture_output=True, text=True,
                          timeout=START_TIMEOUT_S, check=False)


def test_edge_refuses_wrong_settings_with_one_line_each_and_exit_2(tmp_path: Path) -> None:
    env_file = tmp_path / "edge.env"
    env_file.write_text("SEMINOTE_EDGE_SERVER__PORT=http\nSEMINOTE_EDGE_SERVER__MAX_SESIONS=3\n"
                        "SEMINOTE_EDGE_SERVICE__DRAIN_TIMEOUT_S=-5\n# a comment\nUNRELATED=1\n")
    done = run_cli(["edge_node", "serve", "--env-file", str(env_file)],
                   {"SEMINOTE_EDGE_ANALYSIS__DEFAULT_MODE": "heavy"})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 4, done.stderr
    assert all(line.startswith("seminote-edge serve: invalid settings: ") for line in lines)
    text = done.stderr
    assert "SEMINOTE_EDGE_SERVER__PORT='http': Input should be a valid integer" in text
    assert "SEMINOTE_EDGE_SERVER__MAX_SESIONS in " in text and "did you mean SEMINOTE_EDGE_SERVER__MAX_SESSIONS" in text
    assert "SEMINOTE_EDGE_SERVICE__DRAIN_TIMEOUT_S='-5'" in text and "greater than or equal to 0" in text
    assert "SEMINOTE_EDGE_ANALYSIS__DEFAULT_MODE='heavy'" in text

    done = run_cli(["edge_node", "serve", "--env-file", str(tmp_path / "missing.env")], {})
    assert done.returncode == 2 and done.stderr.strip().endswith("missing.env: no such file"), done.stderr


def test_control_refuses_wrong_settings_with_one_line_each_and_exit_2(tmp_path: Path) -> None:
    env_file = tmp_path / "control.env"
    env_file.write_text("SEMINOTE_CONTROL_GRPC__PORT=99999\nSEMINOTE_CONTROL_METRICS__PROT=9464\n")
    done = run_cli(["control_plane", "serve", "--env-file", str(env_file)],
                   {"SEMINOTE_CONTROL_ROUTING__SLOW_BPM": "slow", "SEMINOTE_CONTROL_ADDR": "127.0.0.1:1"})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("seminote-control: invalid settings: ") for line in lines)
    assert "SEMINOTE_CONTROL_GRPC__PORT='99999': Input should be less than or equal to 65535" in done.stderr
    assert "did you mean SEMINOTE_CONTROL_METRICS__PORT?" in done.stderr
    assert "SEMINOTE_CONTROL_ROUTING__SLOW_BPM='slow'" in done.stderr
    assert "SEMINOTE_CONTROL_ADDR" not in done.stderr  # seminotectl's variable is not a wrong setting


def test_values_of_secret_settings_are_not_echoed(tmp_path: Path) -> None:
    done = run_cli(["control_plane", "serve"], {"SEMINOTE_CONTROL_AUTH": '{"admin_tokens": {"s3cret-value": 1}}'})
    assert done.returncode == 2
    assert "s3cret-value" not in done.stderr and "SEMINOTE_CONTROL_AUTH__ADMIN_TOKENS=<hidden>" in done.stderr, \
        done.stderr
