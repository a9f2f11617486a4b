"""Fixtures for the result-sync tests: real nats-server processes on free loopback ports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import ManagedProcess, NatsNode, start_cluster

# 10,000 results per fault in CI; the acceptance run sets SEMINOTE_SYNC_RESULTS=100000.
SYNC_RESULTS = int(os.environ.get("SEMINOTE_SYNC_RESULTS", "10000"))


@pytest.fixture
def nats_node(tmp_path: Path) -> Iterator[NatsNode]:
    """One ``nats-server -js`` with its own store dir; killed at the end even if the test failed."""
    node = NatsNode(tmp_path / "nats", "n1")
    node.start()
    try:
        yield node
    finally:
        node.kill()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[list[NatsNode]]:
    """Three clustered ``nats-server -js`` nodes on loopback ports."""
    nodes = start_cluster(tmp_path / "nats")
    try:
        yield nodes
    finally:
        for node in nodes:
            node.kill()


@pytest.fixture
def processes() -> Iterator[list[ManagedProcess]]:
    """Register processes here and they are SIGKILLed at the end of the test."""
    procs: list[ManagedProcess] = []
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
