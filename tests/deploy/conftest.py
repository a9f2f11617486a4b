"""Real daemons for the deploy tests: ``seminote-edge serve`` / ``seminote-control serve`` subprocesses
under a real ``NOTIFY_SOCKET`` (a unix datagram socket the test binds), every one killed at the end."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

START_TIMEOUT_S = 120.0  # a cold numba cache on a loaded 2-core machine
KILL_WAIT_S = 10.0
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1  # prctl: the kernel's memory-deny-write-execute (Linux >= 6.3)
# Python source that turns MDWE on for the running process (and what it execs), as systemd's
# MemoryDenyWriteExecute=yes does, or exits when the kernel cannot.
MDWE_PRELUDE = (
    "import ctypes, os, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    f"if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:\n"
    "    sys.exit('no MDWE: ' + os.strerror(ctypes.get_errno()))\n"
)


def mdwe_supported() -> bool:
    probe = subprocess.run([sys.executable, "-c", MDWE_PRELUDE + "print('ok')"], capture_output=True, text=True,
                           timeout=30, check=False)
    return probe.returncode == 0


@dataclass
class Daemon:
    """One daemon subprocess, its log file, and the notifications it sent (with receive times)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    notify: socket.socket
    proc: subprocess.Popen[bytes] | None = None
    messages: list[tuple[float, str]] = field(default_factory=list)

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(KILL_WAIT_S)

    def collect(self, timeout_s: float) -> list[str]:
        """Notifications that arrive within ``timeout_s`` (all of them, in order)."""
        got = []
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            self.notify.settimeout(left)
            try:
                data = self.notify.recv(4096).decode()
            except TimeoutError:
                break
            self.messages.append((time.monotonic(), data))
            got.append(data)
        return got

    def wait_for(self, field_line: str, timeout_s: float) -> float:
        """Receive until a notification carries ``field_line`` (e.g. ``READY=1``); its receive time."""
        deadline = time.monotonic() + timeout_s
        for t, m in self.messages:
            if field_line in m.split("\n"):
                return t
        while (left := deadline - time.monotonic()) > 0:
            self.notify.settimeout(min(left, 1.0))
            try:
                data = self.notify.recv(4096).decode()
            except TimeoutError:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    break
                continue
            now = time.monotonic()
            self.messages.append((now, data))
            if field_line in data.split("\n"):
                return now
        raise AssertionError(f"{self.name}: no {field_line} within {timeout_s}s\n{self.log_tail()}")

    def fields(self) -> list[str]:
        return [line for _, m in self.messages for line in m.split("\n")]

    def log_lines(self) -> list[dict[str, object]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[Daemon]]:
    """Make daemons with ``spawn(daemons, ...)``; all are killed and their sockets closed at the end."""
    made: list[Daemon] = []
    yield made
    for d in made:
        d.kill()
        d.notify.close()


def spawn(made: list[Daemon], name: str, args: list[str], env: dict[str, str], log_dir: Path,
          watchdog_usec: int | None = None, abstract: bool = False, wrapper: list[str] | None = None) -> Daemon:
    """Bind a notify socket (abstract, or a short filesystem path), then start ``python -m <args>``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name_ = f"seminote-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name_)
        address = "@" + name_
    else:  # unix socket paths are limited to 108 bytes: pytest's tmp_path can be longer
        address = os.path.join(tempfile.mkdtemp(prefix="sn-"), "notify")
        sock.bind(address)
    full_env = {**{k: v for k, v in os.environ.items() if not k.startswith(("SEMINOTE_", "NOTIFY_", "WATCHDOG_"))},
                "PYTHONUNBUFFERED": "1", "NOTIFY_SOCKET": address, **env}
    if watchdog_usec is not None:
        full_env["WATCHDOG_USEC"] = str(watchdog_usec)
    argv = [*(wrapper or []), sys.executable, "-m", *args]
    d = Daemon(name, argv, full_env, log_dir / f"{name}.log", sock)
    made.append(d)
    d.start()
    return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
