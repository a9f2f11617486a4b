"""The relay in a child process of the edge: spawned, fed and supervised by the edge; dies with it.

A relay catching up a backlog does JSON, SQLite and NATS protocol work for every row. Inside the
edge's event loop (and under its GIL) that work delays the audio path's frames, which showed as a
feedback p99 of 72 ms instead of 30 ms while 100,000 rows drained. So the edge runs the relay as
``python -m edge_node.relay_process``: its own interpreter, its own SQLite connection to the outbox
file (WAL), and ``relay_niceness`` lower CPU priority (set by the edge with :func:`os.setpriority`
as soon as it is spawned), so on a busy machine the scheduler gives the audio path the CPU first.

Pipe protocol, one JSON object per line:

- edge → relay (the child's stdin): first the configuration ``{"edge_id", "sync", "log_format"}``;
  at shutdown ``{"op": "drain", "timeout_s"}``: publish what is in the outbox, report, exit 0.
  **End of file** means the edge is gone (killed, or closing the relay): the relay exits at once,
  leaving unacked rows in the file for the next relay (re-publishing them is deduplicated by message
  id). New rows need no message: the relay notices any process's commit to the file itself
  (:meth:`~edge_node.outbox.OutboxReader.changed`), so it serves an edge whose sessions run in
  worker processes alike.
- relay → edge (its stdout): ``{"op": "stats", ...}`` (cumulative :class:`~edge_node.relay.RelayStats`)
  whenever they changed, at most every ``REPORT_INTERVAL_S``, which the edge turns into its
  ``seminote_relay_*`` metrics; ``{"op": "drained", "rows_left"}`` after a drain. Its logs go to the
  edge's stderr, in the edge's log format.

The edge restarts a relay that died, with exponential back-off (``seminote_relay_restarts_total``).
The relay holds an exclusive lock on ``<outbox>.relay-lock`` while it runs, so two relays never
publish one outbox at once (that would break per-session order): a new one waits for an old one to
go. The relay ignores SIGINT (a terminal's Ctrl-C reaches the whole process group; the edge decides
when it stops).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import os
import signal
import sys
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

import structlog

from .errors import SyncError
from .logs import configure_logging
from .outbox import Outbox, SyncMetrics
from .relay import Relay, RelayStats
from .settings import SyncSettings

__all__ = ["RelayProcess", "ResultSync"]

log = structlog.get_logger(__name__)

REPORT_INTERVAL_S = 0.25
"""How often the relay process reports its counters to the edge (when they changed)."""
RESTART_BACKOFF_INITIAL_S = 0.5
RESTART_BACKOFF_MAX_S = 30.0
RESTART_STABLE_S = 60.0
"""A relay that ran this long before dying is restarted after the initial back-off again."""
DRAIN_MARGIN_S = 2.0
"""Beyond the drain's own deadline: the relay's start-up and its final report."""
CHILD_EXIT_TIMEOUT_S = 5.0
"""How long the edge waits for a relay to exit at end of file before it kills it."""
LOCK_POLL_S = 0.05


def lock_path(outbox_path: Path) -> Path:
    """The file a running relay holds an exclusive lock on."""
    return outbox_path.with_name(outbox_path.name + ".relay-lock")


# -- the edge's side -----------------------------------------------------------------------------------


class RelayProcess:
    """Runs, feeds and supervises the relay child process for one :class:`Outbox` (see module
    docstring). ``stats`` totals what every relay process reported; ``pid`` is the current one and
    ``exit_code`` how the last one ended."""

    def __init__(self, settings: SyncSettings, edge_id: str, outbox: Outbox, log_format: str | None = None) -> None:
        self.settings = settings
        self.edge_id = edge_id
        self.outbox = outbox
        self.metrics: SyncMetrics = outbox.metrics
        self.log_format = log_format or _current_log_format()
        self.stats = RelayStats()
        self.restarts = 0
        self.exit_code: int | None = None
        self._last = RelayStats()  # the current process's last report
        self._proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._state: Literal["new", "running", "closed"] = "new"
        self._drain_deadline: float | None = None
        self._drained = asyncio.Event()
        self._restart_now = asyncio.Event()
        self._first_spawn = asyncio.Event()

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    async def start(self) -> None:
        """Start supervising; returns once the first relay process was spawned (or failed to be)."""
        if self._state == "closed":
            raise SyncError("relay process was closed; create a new one")
        if self._state == "running":
            return
        self._state = "running"
        self._supervisor = asyncio.create_task(self._supervise(), name="relay-supervisor")
        await self._first_spawn.wait()

    async def drain(self, timeout_s: float) -> bool:
        """The shutdown step "flush the outbox": write what sessions recorded, have the relay publish
        every row within ``timeout_s``, and let it exit. ``True`` when the outbox is empty; rows left
        over stay on disk for the next start."""
        await self.outbox.flush()
        if self._state == "running" and not self._drained.is_set():
            loop = asyncio.get_running_loop()
            self._drain_deadline = loop.time() + timeout_s
            self._send_drain()
            self._restart_now.set()  # a relay waiting out its restart back-off starts now
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s + DRAIN_MARGIN_S):
                    await self._drained.wait()
            if self._drained.is_set() and self._supervisor is not None:  # the relay exits after its report
                await asyncio.wait({self._supervisor}, timeout=CHILD_EXIT_TIMEOUT_S)
        left = await self.outbox.refresh_rows()
        if left:
            log.warning("relay stopped with rows left in the outbox", outbox_rows=left)
        return left == 0

    async def aclose(self) -> None:
        """Stop the relay process (end of file on its stdin; killed if it does not exit) and stop
        restarting it. Rows not yet published stay in the outbox. Safe to call twice."""
        if self._state != "running":
            self._state = "closed"
            return
        self._state = "closed"
        self._restart_now.set()
        proc = self._proc
        if proc is not None and proc.stdin is not None:
            proc.stdin.close()
        if self._supervisor is not None:
            try:
                async with asyncio.timeout(CHILD_EXIT_TIMEOUT_S):
                    await asyncio.shield(self._supervisor)
            except TimeoutError:
                log.warning("relay process did not exit; killing it", pid=proc.pid if proc else None)
                if proc is not None and proc.returncode is None:
                    proc.kill()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(CHILD_EXIT_TIMEOUT_S):
                        await asyncio.shield(self._supervisor)
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor

    async def __aenter__(self) -> RelayProcess:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- supervision ------------------------------------------------------------------------------------

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        backoff_s = RESTART_BACKOFF_INITIAL_S
        while self._state == "running" and not self._drained.is_set():
            started = loop.time()
            try:
                code: int | None = await self._run_child()
            except OSError as exc:
                log.error("relay process could not be started", error=repr(exc))
                code = None
            finally:
                self._first_spawn.set()
            if self._state != "running" or self._drained.is_set():
                return
            if loop.time() - started >= RESTART_STABLE_S:
                backoff_s = RESTART_BACKOFF_INITIAL_S
            self.restarts += 1
            self.metrics.relay_restarts.inc()
            log.error("relay process exited; restarting it", exit_code=code, retry_in_s=backoff_s)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff_s):
                    await self._restart_now.wait()
            backoff_s = min(backoff_s * 2, RESTART_BACKOFF_MAX_S)

    async def _run_child(self) -> int:
        """One relay process from spawn to exit; returns its exit code."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", __name__, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        self._proc = proc
        self._first_spawn.set()
        # Lowered from here, before it reads its configuration: its start-up runs at low priority too,
        # and every thread it starts inherits the niceness.
        niceness = min(19, os.getpriority(os.PRIO_PROCESS, 0) + self.settings.relay_niceness)
        with contextlib.suppress(ProcessLookupError):
            os.setpriority(os.PRIO_PROCESS, proc.pid, niceness)
        self._last = RelayStats()
        self.metrics.relay_running.set(1)
        log.info("relay process started", pid=proc.pid, niceness=niceness)
        try:
            self._send({"edge_id": self.edge_id, "sync": self.settings.model_dump(mode="json"),
                        "log_format": self.log_format})
            if self._drain_deadline is not None:
                self._send_drain()
            assert proc.stdout is not None
            async for line in proc.stdout:  # until the process exits (or closes its stdout)
                self._on_report(line)
            self.exit_code = await proc.wait()
            return self.exit_code
        finally:
            if proc.returncode is None:  # cancelled: never leave it behind
                proc.kill()
                await asyncio.shield(proc.wait())
            self._proc = None
            self.metrics.relay_running.set(0)
            self.metrics.nats_connected.set(0)
            self.stats.nats_connected = False

    def _on_report(self, line: bytes) -> None:
        try:
            report = json.loads(line)
            op = report.pop("op")
            if op == "stats":
                self._count(RelayStats(**report))
            elif op == "drained":
                self._drained.set()
        except (ValueError, TypeError, KeyError):
            log.warning("unreadable report from the relay process", line=line[:200].decode(errors="replace"))

    def _count(self, now: RelayStats) -> None:
        """Advance the edge's counters by what the relay did since its last report."""
        m = self.metrics
        for name, counter in (("published_rows", m.published_rows), ("published_results", m.published_results),
                              ("duplicate_acks", m.duplicate_acks), ("publish_failures", m.publish_failures)):
            delta = getattr(now, name) - getattr(self._last, name)
            if delta > 0:
                counter.inc(delta)
                setattr(self.stats, name, getattr(self.stats, name) + delta)
        m.nats_connected.set(1 if now.nats_connected else 0)
        self.stats.nats_connected = now.nats_connected
        self._last = now

    def _send_drain(self) -> None:
        assert self._drain_deadline is not None
        remaining_s = max(0.0, self._drain_deadline - asyncio.get_running_loop().time())
        self._send({"op": "drain", "timeout_s": remaining_s})

    def _send(self, message: dict[str, Any]) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdin.is_closing():
            return
        proc.stdin.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")


class ResultSync:
    """The edge's result sync as one component: the :class:`Outbox` sessions record in (``outbox``)
    and the relay process that ships it (``relay``). ``seminote-edge serve`` runs one."""

    def __init__(self, settings: SyncSettings, edge_id: str, registry: Any = None) -> None:
        self.outbox = Outbox(settings, edge_id, registry=registry)
        self.relay = RelayProcess(settings, edge_id, self.outbox)

    async def start(self) -> None:
        await self.outbox.start()
        await self.relay.start()

    async def drain(self, timeout_s: float) -> bool:
        """See :meth:`RelayProcess.drain`."""
        return await self.relay.drain(timeout_s)

    async def aclose(self) -> None:
        await self.relay.aclose()
        await self.outbox.aclose()

    async def __aenter__(self) -> ResultSync:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _current_log_format() -> str:
    """The relay logs like the edge: JSON lines when the edge's structlog renders JSON."""
    processors = structlog.get_config().get("processors") or []
    return "json" if processors and isinstance(processors[-1], structlog.processors.JSONRenderer) else "console"


# -- the relay process ---------------------------------------------------------------------------------

EXIT_DEADLINE_S = 10.0
"""Once the edge is gone, the relay process exits within this even if closing NATS hangs."""


class _Reporter:
    """Writes reports to stdout without ever blocking the relay's loop: a stats line that does not fit
    the pipe is skipped (the next one is cumulative); the final lines are written blocking."""

    def __init__(self, stats: RelayStats) -> None:
        self.stats = stats
        self.fd = sys.stdout.fileno()
        os.set_blocking(self.fd, False)
        self._sent: RelayStats | None = None

    def stats_if_changed(self) -> None:
        if self.stats == self._sent:
            return
        snapshot = dataclasses.replace(self.stats)
        with contextlib.suppress(BlockingIOError):
            self._write({"op": "stats", **dataclasses.asdict(snapshot)})
            self._sent = snapshot

    def final(self, message: dict[str, Any]) -> None:
        os.set_blocking(self.fd, True)
        self._sent = None
        with contextlib.suppress(BrokenPipeError):
            self.stats_if_changed()
            self._write(message)

    def _write(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        written = os.write(self.fd, data)  # a line this short is written whole or not at all (PIPE_BUF)
        assert written == len(data)


async def _hold_lock(path: Path) -> IO[str]:
    """Wait for the exclusive lock a running relay holds on ``path``; keep the returned file open."""
    f = path.open("a")
    waited = False
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f
        except BlockingIOError:
            if not waited:
                log.warning("another relay holds the outbox; waiting for it to exit", lock=str(path))
                waited = True
            await asyncio.sleep(LOCK_POLL_S)
        except BaseException:
            f.close()
            raise


async def _relay_until_cancelled(relay: Relay, reporter: _Reporter, running: asyncio.Event) -> None:
    lock = await _hold_lock(lock_path(relay.settings.outbox_path))
    try:
        async with relay:
            running.set()
            while True:
                reporter.stats_if_changed()
                await asyncio.sleep(REPORT_INTERVAL_S)
    finally:
        lock.close()


async def _child() -> int:
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    first = await commands.readline()
    if not first:
        return 0  # the edge went away before it configured us
    config = json.loads(first)
    settings = SyncSettings.model_validate(config["sync"])
    configure_logging(str(config.get("log_format", "json")))
    structlog.contextvars.bind_contextvars(edge_id=config["edge_id"], process="relay")
    relay = Relay(settings, str(config["edge_id"]))
    reporter = _Reporter(relay.stats)
    running = asyncio.Event()
    work = asyncio.create_task(_relay_until_cancelled(relay, reporter, running), name="relay-work")
    try:
        while True:
            line = await _next_command(commands, work)
            if line is None:
                log.info("relay process exiting: the edge closed its pipe")
                return 0
            command = json.loads(line)
            if command.get("op") == "drain":
                left = await _drain(relay, running, float(command["timeout_s"]), commands, work)
                reporter.final({"op": "drained", "rows_left": left})
                log.info("relay drained the outbox", rows_left=left)
                return 0
    finally:
        loop.call_later(EXIT_DEADLINE_S, os._exit, 1)
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work


async def _next_command(commands: asyncio.StreamReader, work: asyncio.Task[None]) -> bytes | None:
    """The edge's next line; ``None`` at end of file. Raises if the relay's work failed."""
    read = asyncio.create_task(commands.readline(), name="relay-command")
    try:
        await asyncio.wait({read, work}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not read.done():
            read.cancel()
    if work.done():
        work.result()  # re-raises what killed it: the process exits non-zero and the edge restarts it
        raise SyncError("relay stopped")
    return read.result() or None


async def _drain(relay: Relay, running: asyncio.Event, timeout_s: float, commands: asyncio.StreamReader,
                 work: asyncio.Task[None]) -> int | None:
    """Publish what the outbox holds within ``timeout_s``; the rows left (``None``: not known, the
    relay never got going or the edge went away meanwhile)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s

    async def drained() -> int | None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await running.wait()
        if not running.is_set():
            return None
        return await relay.drain(max(0.0, deadline - loop.time()))

    draining = asyncio.create_task(drained(), name="relay-drain")
    eof = asyncio.create_task(_drain_commands(commands), name="relay-drain-eof")
    try:
        await asyncio.wait({draining, eof, work}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (draining, eof):
            task.cancel()
    if draining.done() and not draining.cancelled():
        return draining.result()
    return None


async def _drain_commands(commands: asyncio.StreamReader) -> None:
    """Skip the edge's lines until end of file."""
    while await commands.readline():
        pass


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return asyncio.run(_child())


if __name__ == "__main__":
    sys.exit(main())
