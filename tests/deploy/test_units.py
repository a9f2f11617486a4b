"""The systemd units in ``deploy/systemd`` against the machine's real ``systemd-analyze``, and the env
examples against the daemons' settings.

``verify`` needs the ExecStart binary to exist, so each unit is checked as a copy whose ExecStart
points at this environment's console script instead of ``/opt/seminote/venv/bin``; nothing else in
the unit changes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from control_plane.settings import ControlSettings
from edge_node.envconfig import load_settings, unknown_keys
from edge_node.settings import EdgeSettings

from .conftest import MDWE_PRELUDE, mdwe_supported

REPO = Path(__file__).resolve().parents[2]
UNIT_DIR = REPO / "deploy" / "systemd"
UNITS = ("seminote-edge.service", "seminote-control.service")
INSTALLED_BIN = "/opt/seminote/venv/bin/"
MAX_EXPOSURE = 2.0
ANALYZE_TIMEOUT_S = 60
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")

needs_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed "
                                   "(scripts/setup.sh installs the systemd package)")


def local_copy(unit: str, tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this environment's console scripts."""
    bin_dir = Path(shutil.which("seminote-edge") or Path(sys.executable).parent / "seminote-edge").parent
    text = (UNIT_DIR / unit).read_text()
    assert INSTALLED_BIN in text
    out = tmp_path / unit
    out.write_text(text.replace(INSTALLED_BIN, f"{bin_dir}/"))
    return out


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run([SYSTEMD_ANALYZE, *args], capture_output=True, text=True, timeout=ANALYZE_TIMEOUT_S,
                          check=False)


@needs_analyze
@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verify_prints_nothing(unit: str, tmp_path: Path) -> None:
    done = analyze("verify", str(local_copy(unit, tmp_path)))
    assert done.returncode == 0 and done.stdout == "" and done.stderr == "", done.stdout + done.stderr


@needs_analyze
def test_verify_does_complain_about_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt directive and a missing binary are reported."""
    text = local_copy(UNITS[0], tmp_path).read_text()
    broken = tmp_path / "broken.service"
    broken.write_text(text.replace("WatchdogSec=", "WatchdogSecs=").replace("seminote-edge serve", "nope serve"))
    done = analyze("verify", str(broken))
    assert "WatchdogSecs" in done.stderr and "nope" in done.stderr


@needs_analyze
@pytest.mark.parametrize("unit", UNITS)
def test_security_exposure_is_at_most_two(unit: str, tmp_path: Path) -> None:
    done = analyze("security", "--offline=yes", str(local_copy(unit, tmp_path)))
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", done.stdout)
    assert match, done.stdout[-2000:] + done.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, done.stdout


@pytest.mark.parametrize("unit", UNITS)
def test_units_speak_the_notify_protocol_and_keep_state_where_systemd_gives_it(unit: str) -> None:
    lines = {line.split("=", 1)[0]: line.split("=", 1)[1]
             for line in (UNIT_DIR / unit).read_text().splitlines() if "=" in line and not line.startswith("#")}
    assert lines["Type"] == "notify" and lines["NotifyAccess"] == "main"
    assert lines["WatchdogSec"] and lines["Restart"] == "on-failure"
    assert lines["RestartPreventExitStatus"] == "2"  # wrong settings are not retried
    assert lines["DynamicUser"] == "yes" and lines["ProtectSystem"] == "strict"
    assert "--env-file ${CREDENTIALS_DIRECTORY}/" in lines["ExecStart"]
    name = unit.removesuffix(".service")
    assert lines["StateDirectory"] == name and lines["CacheDirectory"] == name


@pytest.mark.parametrize("unit", ["seminote-edge", "seminote-control"])
def test_units_point_numba_cache_at_their_cache_directory(unit: str) -> None:
    text = (UNIT_DIR / f"{unit}.service").read_text()
    assert f"Environment=NUMBA_CACHE_DIR=%C/{unit}/numba" in text
    assert "\nMemoryDenyWriteExecute=" not in text


def test_numba_jit_cannot_run_under_memory_deny_write_execute(tmp_path: Path) -> None:
    """Why the units leave MemoryDenyWriteExecute= off: under the kernel's MDWE (what systemd
    applies for it), numba cannot compile a kernel. If this ever passes, the units can set it."""
    if not mdwe_supported():
        pytest.skip("this kernel has no PR_SET_MDWE (Linux >= 6.3)")
    code = MDWE_PRELUDE + (
        "import numba\n"
        "@numba.njit(cache=False)\n"
        "def f(x):\n    return x + 1\n"
        "print(f(1))\n"
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                          check=False)
    assert done.returncode != 0 and "executable memory" in done.stderr, done.stdout + done.stderr[-1000:]


@pytest.mark.parametrize(("example", "cls"), [("edge.env.example", EdgeSettings),
                                              ("control.env.example", ControlSettings)])
def test_env_examples_are_valid_settings(example: str, cls: type[BaseSettings]) -> None:
    loaded, warnings = load_settings(cls, REPO / "deploy" / example, {})
    settings: Any = loaded
    assert warnings == []
    assert len(settings.sync.nats_urls) == 3  # the 3-node cluster of deploy/nats/


def test_compose_file_sets_only_real_settings() -> None:
    """The compose file is not run in CI (no Docker), but its settings are checked like an env file."""
    text = (REPO / "deploy" / "compose" / "compose.yaml").read_text()
    edge_keys = re.findall(r"^\s+(SEMINOTE_EDGE_\w+):", text, flags=re.M)
    control_keys = re.findall(r"^\s+(SEMINOTE_CONTROL_\w+):", text, flags=re.M)
    assert len(edge_keys) >= 5 and len(control_keys) >= 5
    assert unknown_keys(EdgeSettings, edge_keys) == []
    assert unknown_keys(ControlSettings, control_keys) == []
    assert unknown_keys(EdgeSettings, ["SEMINOTE_EDGE_SERVER__PROT"]) == [
        ("SEMINOTE_EDGE_SERVER__PROT", "SEMINOTE_EDGE_SERVER__PORT")]
