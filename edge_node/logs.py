"""structlog set-up, once per process, shared by both daemons: contextvars first; JSON lines under
systemd (journald) or when stderr is not a terminal, pretty in a terminal."""

from __future__ import annotations

import logging
import os
import sys

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(fmt: str = "auto", level: str = "info", under_systemd: bool | None = None) -> None:
    """``fmt``: ``json``, ``console`` or ``auto`` (JSON when journald/no TTY, pretty on a terminal)."""
    if under_systemd is None:
        under_systemd = "JOURNAL_STREAM" in os.environ or "INVOCATION_ID" in os.environ
    use_json = fmt == "json" or (fmt == "auto" and (under_systemd or not sys.stderr.isatty()))
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)  # third-party stdlib loggers
