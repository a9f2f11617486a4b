"""``edge_node.sdnotify`` against real unix datagram sockets: filesystem and abstract addresses, the
watchdog heartbeat from the event loop, STATUS changes, and silence when not under systemd."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_node.sdnotify import Notifier, NotifyConfig

RECV_TIMEOUT_S = 5.0


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(RECV_TIMEOUT_S)
    yield sock, str(path)
    sock.close()


def received(sock: socket.socket, n: int) -> list[str]:
    return [sock.recv(4096).decode() for _ in range(n)]


def test_config_from_environ_reads_socket_and_watchdog_for_this_process_only() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}
    assert NotifyConfig.from_environ(env, pid=4242) == NotifyConfig("/run/x", 30_000_000)
    assert NotifyConfig.from_environ(env, pid=1).watchdog_usec is None  # the watchdog is another process's
    assert NotifyConfig.from_environ({"NOTIFY_SOCKET": "@abstract"}, pid=1).socket_path == "@abstract"
    assert NotifyConfig.from_environ({"NOTIFY_SOCKET": "relative"}, pid=1).socket_path is None
    assert NotifyConfig.from_environ({"WATCHDOG_USEC": "soon"}, pid=1).watchdog_usec is None
    assert NotifyConfig.from_environ({}, pid=1) == NotifyConfig()
    assert NotifyConfig("/x", 30_000_000).watchdog_interval_s == 15.0


async def test_ready_status_stopping_and_extend_reach_a_filesystem_socket(
    listener: tuple[socket.socket, str]
) -> None:
    sock, path = listener
    async with Notifier(NotifyConfig(path)) as n:
        assert n.ready("serving 0 sessions")
        assert n.status("serving\n3 sessions")
        assert n.stopping()
        assert n.extend_timeout(15)
    assert received(sock, 4) == ["READY=1\nSTATUS=serving 0 sessions", "STATUS=serving 3 sessions",
                                 "STOPPING=1", "EXTEND_TIMEOUT_USEC=15000000"]


async def test_abstract_namespace_socket() -> None:
    name = f"seminote-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(RECV_TIMEOUT_S)
    try:
        async with Notifier(NotifyConfig("@" + name)) as n:
            assert n.ready()
        assert sock.recv(4096) == b"READY=1"
    finally:
        sock.close()


def pending(sock: socket.socket) -> list[str]:
    """Every datagram waiting on ``sock``, without blocking."""
    sock.setblocking(False)
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


async def test_heartbeat_pings_the_watchdog_at_half_its_timeout_and_sends_status_changes(
    listener: tuple[socket.socket, str]
) -> None:
    sock, path = listener
    count = {"n": 1}
    async with Notifier(NotifyConfig(path, watchdog_usec=200_000), status=lambda: f"serving {count['n']}"):
        await asyncio.sleep(0.55)  # pings at 0, 0.1, ..., 0.5 s
        count["n"] = 2
        await asyncio.sleep(0.25)
    messages = pending(sock)
    pings = [m for m in messages if "WATCHDOG=1" in m]
    statuses = [line for m in messages for line in m.split("\n") if line.startswith("STATUS=")]
    assert 6 <= len(pings) <= 10, messages
    assert statuses == ["STATUS=serving 1", "STATUS=serving 2"]


async def test_a_stuck_event_loop_sends_no_watchdog_pings(listener: tuple[socket.socket, str]) -> None:
    """The ping comes from the event loop, so blocking it stops the pings (and systemd would restart)."""
    sock, path = listener
    async with Notifier(NotifyConfig(path, watchdog_usec=100_000)):
        await asyncio.sleep(0.2)
        assert len(pending(sock)) >= 3  # alive: a ping every 50 ms
        time.sleep(0.3)  # noqa: ASYNC251 -- the point: the loop is stuck for six ping intervals
        assert pending(sock) == []
        await asyncio.sleep(0.1)
        assert pending(sock)  # and pings again once it runs


async def test_without_notify_socket_everything_is_a_no_op() -> None:
    async with Notifier(NotifyConfig(), status=lambda: "x") as n:
        assert not n.enabled
        assert not n.ready() and not n.watchdog() and not n.stopping()


async def test_a_vanished_manager_is_not_an_error(tmp_path: Path) -> None:
    n = Notifier(NotifyConfig(str(tmp_path / "gone.sock")))
    await n.start()
    assert n.ready() is False  # nobody listens: logged once, never raised
    await n.aclose()
    await n.aclose()  # closing twice is safe
    with pytest.raises(RuntimeError):
        await n.start()


async def test_a_failing_status_function_does_not_stop_the_watchdog(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener

    def broken() -> str:
        raise RuntimeError("status source gone")

    async with Notifier(NotifyConfig(path, watchdog_usec=100_000), status=broken):
        await asyncio.sleep(0.3)
    assert sum(m == "WATCHDOG=1" for m in pending(sock)) >= 4
