"""JetStream set-up as code: the results stream, the dead-letter stream and the ingest's consumer.

:func:`ensure_results_topology` is idempotent and safe to call from every control-plane replica at
every start: it creates what is missing, updates what differs (e.g. ``replicas`` raised from 1 to 3)
and leaves alone what matches. The stream keeps results for ``max_age_s`` (limits retention), so a
new consumer can rebuild a progress store from it; ``duplicate_window_s`` is JetStream's own
``Nats-Msg-Id`` dedup window.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

from .settings import ResultSyncSettings

__all__ = ["Topology", "consumer_config", "deadletter_stream_config", "ensure_results_topology",
           "results_stream_config"]

log = structlog.get_logger(__name__)

MAX_ACK_PENDING = 20_000
"""Messages the ingest may hold unacked; bounds memory and redelivery after a crash."""
DEADLETTER_MAX_AGE_S = 30 * 86400.0


@dataclass(frozen=True, slots=True)
class Topology:
    """What :func:`ensure_results_topology` did, for logs and tests."""

    stream_created: bool
    stream_updated: bool
    deadletter_created: bool
    consumer_created: bool


def results_stream_config(settings: ResultSyncSettings) -> StreamConfig:
    return StreamConfig(
        name=settings.stream_name,
        description="Seminote edge results (note/score batches and summaries)",
        subjects=[f"{settings.subject_prefix}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        num_replicas=settings.replicas,
        duplicate_window=settings.duplicate_window_s,
        max_age=settings.max_age_s,
        max_msg_size=settings.max_message_bytes,
    )


def deadletter_stream_config(settings: ResultSyncSettings) -> StreamConfig:
    return StreamConfig(
        name=settings.deadletter_stream,
        description="Result messages the ingest could not read, with the reason in a header",
        subjects=[settings.deadletter_subject],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=settings.replicas,
        max_age=DEADLETTER_MAX_AGE_S,
    )


def consumer_config(settings: ResultSyncSettings) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=settings.durable_name,
        description="control-plane progress ingest",
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait_s,
        max_deliver=-1,
        max_ack_pending=MAX_ACK_PENDING,
        filter_subject=f"{settings.subject_prefix}.>",
    )


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> tuple[bool, bool]:
    """Create or update one stream; returns (created, updated)."""
    assert config.name is not None
    try:
        info = await js.stream_info(config.name)
    except NotFoundError:
        try:
            await js.add_stream(config)
            log.info("stream created", stream=config.name, replicas=config.num_replicas)
            return True, False
        except BadRequestError:
            # Another replica created it between our look and our add: fall through to compare.
            info = await js.stream_info(config.name)
    have = info.config
    if (
        have.subjects != config.subjects
        or have.num_replicas != config.num_replicas
        or abs((have.duplicate_window or 0) - config.duplicate_window) > 1e-3
        or abs((have.max_age or 0) - (config.max_age or 0)) > 1e-3
        or have.max_msg_size != config.max_msg_size
    ):
        await js.update_stream(config)
        log.info("stream updated", stream=config.name, replicas=config.num_replicas)
        return False, True
    return False, False


async def ensure_results_topology(js: JetStreamContext, settings: ResultSyncSettings) -> Topology:
    """Make the results stream, the dead-letter stream and the durable consumer match ``settings``."""
    created, updated = await _ensure_stream(js, results_stream_config(settings))
    dl_created, _ = await _ensure_stream(js, deadletter_stream_config(settings))
    wanted = consumer_config(settings)
    consumer_created = False
    try:
        have = (await js.consumer_info(settings.stream_name, settings.durable_name)).config
        if (have.ack_wait, have.filter_subject, have.max_ack_pending) != (
            wanted.ack_wait, wanted.filter_subject, wanted.max_ack_pending
        ):
            await js.add_consumer(settings.stream_name, wanted)  # same durable: updates it
    except NotFoundError:
        await js.add_consumer(settings.stream_name, wanted)
        consumer_created = True
        log.info("consumer created", stream=settings.stream_name, durable=settings.durable_name)
    return Topology(created, updated, dl_created, consumer_created)
