"""The ingest: a durable pull consumer that moves results from JetStream into the progress store.

Each round fetches up to ``fetch_batch`` messages (in stream order), validates them
(:func:`parse_result_message`, pure), writes the valid ones in **one** store transaction, then acks
them. A message that cannot be read (not JSON, truncated, wrong shape, no message id) is published to
the dead-letter subject with the reason in the ``Seminote-Deadletter-Reason`` header and then acked:
it never blocks the messages behind it and never crashes the consumer. When the store write fails
the same batch is retried (not skipped, not nak'd) until it succeeds, so no later message overtakes
it and each session's results stay in order. Acks are sent after the write: a crash in between
means a redelivery, which the store ignores by message id.

Runs inside ``seminote-control serve`` or alone as a worker process::

    python -m control_plane.ingest --nats nats://127.0.0.1:4222 --db progress.db
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import signal
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from .jetstream import ensure_results_topology
from .progress_store import ApplyStats, ProgressStore, ResultMessage
from .settings import ResultSyncSettings

__all__ = ["CorruptMessage", "Ingest", "parse_result_message"]

log = structlog.get_logger(__name__)

MESSAGE_VERSION = 1
MAX_ID_CHARS = 256
MAX_EVENTS_PER_MESSAGE = 1_000
MAX_SEQ = 2**53  # exact in a double; SQLite integers hold it
BACKOFF_INITIAL_S = 0.1
CONNECT_TIMEOUT_S = 2.0
RECONNECT_WAIT_S = 0.25
FLUSH_TIMEOUT_S = 1  # nats-py takes whole seconds
REASON_MAX_CHARS = 300
SYNCED_TYPES = ("note", "score")
SUMMARY_NUMBERS = ("pitch_accuracy", "rhythm_accuracy", "dynamics_range", "overall_score", "duration_s")
DEADLETTER_REASON_HEADER = "Seminote-Deadletter-Reason"
DEADLETTER_SUBJECT_HEADER = "Seminote-Original-Subject"
DEADLETTER_MSG_ID_HEADER = "Seminote-Original-Msg-Id"


class CorruptMessage(Exception):
    """A message on the results stream that cannot be applied; ``reason`` says why, in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- validation (pure) -------------------------------------------------------------------------------

def _text(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        raise CorruptMessage(f"field {key!r} must be a non-empty string of at most {MAX_ID_CHARS} chars")
    return value


def _finite(obj: dict[str, Any], key: str, *, optional: bool = False) -> float | None:
    value = obj.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CorruptMessage(f"field {key!r} must be a finite number")
    return float(value)


def _event(raw: Any, index: int) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise CorruptMessage(f"events[{index}] is not an object")
    if raw.get("type") not in SYNCED_TYPES:
        raise CorruptMessage(f"events[{index}].type must be one of {SYNCED_TYPES}")
    seq = raw.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ:
        raise CorruptMessage(f"events[{index}].seq must be a non-negative integer (at most {MAX_SEQ})")
    try:
        _finite(raw, "t")
    except CorruptMessage as exc:
        raise CorruptMessage(f"events[{index}]: {exc.reason}") from None
    return raw


def parse_result_message(subject: str, data: bytes, headers: dict[str, str] | None,
                         max_bytes: int) -> ResultMessage:
    """Validate one results message; raises :class:`CorruptMessage` with a reason when it is not one
    (and only that: whatever the bytes, nothing else escapes)."""
    try:
        return _parse(subject, data, headers, max_bytes)
    except CorruptMessage:
        raise
    except RecursionError:
        raise CorruptMessage("payload nests too deeply") from None
    except Exception as exc:  # e.g. OverflowError for a number no float can hold
        raise CorruptMessage(f"unreadable payload ({type(exc).__name__}: {exc})") from None


def _parse(subject: str, data: bytes, headers: dict[str, str] | None, max_bytes: int) -> ResultMessage:
    msg_id = (headers or {}).get("Nats-Msg-Id")
    if not msg_id or len(msg_id) > MAX_ID_CHARS:
        raise CorruptMessage("missing or oversized Nats-Msg-Id header")
    if len(data) > max_bytes:
        raise CorruptMessage(f"message of {len(data)} bytes exceeds {max_bytes}")
    try:
        body = json.loads(data)
    except UnicodeDecodeError:
        raise CorruptMessage("payload is not UTF-8") from None
    except json.JSONDecodeError as exc:
        cut = exc.pos >= len(data.rstrip()) or exc.msg.startswith("Unterminated string")
        where = "truncated" if cut else f"at byte {exc.pos}"
        raise CorruptMessage(f"payload is not JSON ({where}: {exc.msg})") from None
    if not isinstance(body, dict):
        raise CorruptMessage("payload is not a JSON object")
    if body.get("v") != MESSAGE_VERSION:
        raise CorruptMessage(f"unsupported message version {body.get('v')!r}")
    edge_id = _text(body, "edge_id")
    session_id = _text(body, "session_id")
    user_id = _text(body, "user_id")
    started_at = _finite(body, "started_at")
    assert started_at is not None
    kind = body.get("kind")
    tokens = subject.split(".")
    if len(tokens) < 2 or tokens[-2] != edge_id or tokens[-1] != kind:
        raise CorruptMessage(f"subject {subject!r} does not match edge_id {edge_id!r} / kind {kind!r}")
    if kind == "events":
        raw_events = body.get("events")
        if not isinstance(raw_events, list) or not raw_events:
            raise CorruptMessage("field 'events' must be a non-empty list")
        if len(raw_events) > MAX_EVENTS_PER_MESSAGE:
            raise CorruptMessage(f"more than {MAX_EVENTS_PER_MESSAGE} events in one message")
        events = tuple(_event(e, i) for i, e in enumerate(raw_events))
        return ResultMessage(msg_id, subject, edge_id, session_id, user_id, started_at, "events", events)
    if kind == "summary":
        summary = body.get("summary")
        if not isinstance(summary, dict) or summary.get("type") != "summary":
            raise CorruptMessage("field 'summary' must be a summary event")
        for key in SUMMARY_NUMBERS:
            try:
                _finite(summary, key, optional=True)
            except CorruptMessage as exc:
                raise CorruptMessage(f"summary: {exc.reason}") from None
        return ResultMessage(msg_id, subject, edge_id, session_id, user_id, started_at, "summary",
                             summary=summary)
    raise CorruptMessage(f"unknown kind {kind!r}")


_DATA_ERRORS: tuple[type[Exception], ...] = (
    sqlite3.IntegrityError, sqlite3.InterfaceError, OverflowError, ValueError, TypeError, KeyError,
)
"""Store errors caused by a message's content: retrying cannot help, so the message is parked."""


def _merge(total: ApplyStats, one: ApplyStats) -> None:
    total.messages += one.messages
    total.duplicate_messages += one.duplicate_messages
    total.results_inserted += one.results_inserted
    total.duplicate_results += one.duplicate_results
    total.summaries += one.summaries


def _one_line(reason: str) -> str:
    return " ".join(reason.split())[:REASON_MAX_CHARS]


# -- the consumer ------------------------------------------------------------------------------------

@dataclass(slots=True)
class IngestCounters:
    """Totals since start (tests and /metrics)."""

    messages: int = 0
    duplicate_messages: int = 0
    results: int = 0
    duplicate_results: int = 0
    summaries: int = 0
    deadlettered: int = 0
    store_retries: int = 0

    def add(self, stats: ApplyStats) -> None:
        self.messages += stats.messages
        self.duplicate_messages += stats.duplicate_messages
        self.results += stats.results_inserted
        self.duplicate_results += stats.duplicate_results
        self.summaries += stats.summaries


class Ingest:
    """Durable pull consumer of the results stream into a :class:`ProgressStore`. One named task."""

    def __init__(self, settings: ResultSyncSettings, store: ProgressStore) -> None:
        self.settings = settings
        self.store = store
        self.counters = IngestCounters()
        self._nc: NatsClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._state: Literal["new", "running", "closed"] = "new"
        self._backoff_s = BACKOFF_INITIAL_S
        self.ready = asyncio.Event()
        """Set once the topology exists and the consumer is bound (tests, readiness)."""

    async def start(self) -> None:
        if self._state == "closed":
            raise RuntimeError("Ingest was closed; make a new one")
        if self._state == "running":
            return
        self._state = "running"
        self._task = asyncio.create_task(self._run(), name="results-ingest")

    async def aclose(self) -> None:
        """Stop fetching; unacked messages are redelivered to the next consumer. Safe to call twice."""
        if self._state == "closed":
            return
        self._state = "closed"
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            try:
                await nc.flush(timeout=FLUSH_TIMEOUT_S)  # send the acks already given
            except Exception:
                log.debug("flushing acks at close failed", exc_info=True)
            try:
                await nc.close()
            except Exception:
                log.debug("closing the NATS connection failed", exc_info=True)

    async def __aenter__(self) -> Ingest:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _run(self) -> None:
        sub: JetStreamContext.PullSubscription | None = None
        js: JetStreamContext | None = None
        while True:
            try:
                if sub is None or js is None or self._nc is None or self._nc.is_closed:
                    js = await self._connect()
                    await ensure_results_topology(js, self.settings)
                    sub = await js.pull_subscribe_bind(
                        durable=self.settings.durable_name, stream=self.settings.stream_name
                    )
                    self.ready.set()
                    log.info("ingest consuming", stream=self.settings.stream_name,
                             durable=self.settings.durable_name)
                try:
                    msgs = await sub.fetch(self.settings.fetch_batch, timeout=self.settings.fetch_timeout_s)
                except nats.errors.TimeoutError:
                    continue
                await self._handle(js, msgs)
                self._backoff_s = BACKOFF_INITIAL_S
            except asyncio.CancelledError:
                raise
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError, OSError) as exc:
                await self._back_off(exc)
            except Exception as exc:
                log.exception("ingest round failed")
                await self._back_off(exc)

    async def _handle(self, js: JetStreamContext, msgs: list[Msg]) -> None:
        valid: list[tuple[Msg, ResultMessage]] = []
        for msg in msgs:
            try:
                valid.append((msg, parse_result_message(
                    msg.subject, msg.data, msg.headers, self.settings.max_message_bytes)))
            except CorruptMessage as exc:
                await self._dead_letter(js, msg, exc.reason)
        if not valid:
            return
        try:
            stats = await self._apply_until_stored([m for _, m in valid])
        except _DATA_ERRORS:
            # Some message the parser accepted still cannot be stored (e.g. a number SQLite cannot
            # hold): apply one by one, park the ones that fail, so a poison message cannot block.
            stats = ApplyStats()
            for msg, message in valid:
                try:
                    one = await self._apply_until_stored([message])
                except _DATA_ERRORS as exc:
                    await self._dead_letter(js, msg, f"store rejected it: {type(exc).__name__}: {exc}")
                    continue
                _merge(stats, one)
                await msg.ack()
            self.counters.add(stats)
            return
        self.counters.add(stats)
        for msg, _ in valid:
            await msg.ack()

    async def _apply_until_stored(self, messages: Sequence[ResultMessage]) -> ApplyStats:
        """Write the batch, retrying the same batch on transient store errors (disk, locks) so nothing
        overtakes it. Errors of the data itself (:data:`_DATA_ERRORS`) are raised to the caller."""
        delay_s = BACKOFF_INITIAL_S
        while True:
            try:
                return await self.store.apply(messages)
            except asyncio.CancelledError:
                raise
            except _DATA_ERRORS:
                raise
            except Exception:
                self.counters.store_retries += 1
                log.exception("progress store write failed; retrying the same batch", retry_in_s=delay_s)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, self.settings.backoff_max_s)

    async def _dead_letter(self, js: JetStreamContext, msg: Msg, reason: str) -> None:
        """Park a message that cannot be read, with why; ack it only once the dead letter is stored."""
        reason = _one_line(reason)
        original_id = (msg.headers or {}).get("Nats-Msg-Id", "")
        stream_seq = msg.metadata.sequence.stream
        headers = {
            DEADLETTER_REASON_HEADER: reason,
            DEADLETTER_SUBJECT_HEADER: msg.subject,
            DEADLETTER_MSG_ID_HEADER: _one_line(original_id)[:MAX_ID_CHARS],
            "Nats-Msg-Id": f"dl.{self.settings.stream_name}.{stream_seq}",
        }
        await js.publish(self.settings.deadletter_subject, msg.data, headers=headers,
                         stream=self.settings.deadletter_stream)
        await msg.ack()
        self.counters.deadlettered += 1
        log.warning("result message dead-lettered", reason=reason, subject=msg.subject, stream_seq=stream_seq)

    async def _back_off(self, exc: BaseException) -> None:
        delay = self._backoff_s * (0.5 + random.random() / 2)
        log.warning("ingest waiting for NATS", error=repr(exc), retry_in_s=round(delay, 3))
        self._backoff_s = min(self._backoff_s * 2, self.settings.backoff_max_s)
        await asyncio.sleep(delay)

    async def _connect(self) -> JetStreamContext:
        if self._nc is not None and not self._nc.is_closed:
            return self._nc.jetstream()
        self._nc = await nats.connect(
            servers=list(self.settings.nats_urls),
            name="seminote-ingest",
            connect_timeout=CONNECT_TIMEOUT_S,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=RECONNECT_WAIT_S,
            pending_size=0,
            error_cb=self._on_error,
        )
        return self._nc.jetstream()

    async def _on_error(self, exc: Exception) -> None:
        log.debug("NATS client error", error=repr(exc))


# -- standalone worker -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m control_plane.ingest",
        description="Ingest synced results from NATS JetStream into the progress store (worker process).",
    )
    parser.add_argument("--nats", action="append", help="NATS server URL (repeatable)")
    parser.add_argument("--db", type=Path, help="progress store SQLite file")
    parser.add_argument("--replicas", type=int, help="stream replicas (1 local, 3 cluster)")
    parser.add_argument("--duplicate-window-s", type=float, help="JetStream dedup window")
    parser.add_argument("--ack-wait-s", type=float, help="redelivery delay of unacked messages")
    return parser


async def _serve(settings: ResultSyncSettings, db_path: Path) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with ProgressStore(db_path) as store, Ingest(settings, store):
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    from .settings import ControlSettings

    args = build_parser().parse_args(argv)
    control = ControlSettings()
    overrides: dict[str, Any] = {}
    if args.nats:
        overrides["nats_urls"] = args.nats
    if args.replicas is not None:
        overrides["replicas"] = args.replicas
    if args.duplicate_window_s is not None:
        overrides["duplicate_window_s"] = args.duplicate_window_s
    if args.ack_wait_s is not None:
        overrides["ack_wait_s"] = args.ack_wait_s
    settings = control.sync.model_copy(update=overrides)
    db_path = args.db or control.progress_db_path
    try:
        asyncio.run(_serve(settings, db_path))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
