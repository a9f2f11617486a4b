"""Errors raised by the edge node.

    SeminoteEdgeError
    ├── AudioInputError        the audio could not be read or decoded (file or live frames)
    ├── ConfigError            a setting is invalid (raised at start-up with the setting's name)
    ├── PipelineError          the analysis pipeline was misused (e.g. fed after finish())
    └── TicketError            a session ticket was refused (``reason`` is safe to show the client)
        ├── TicketMalformed    not a ticket: shape, encoding, fields, size
        ├── TicketExpired      outside its validity window
        ├── TicketForged       no trusted key verifies its signature
        ├── TicketWrongEdge    issued for another edge
        ├── TicketReplayed     already used (tickets are single use)
        └── TicketGuardFull    too many unexpired tickets remembered to accept another
"""

from __future__ import annotations


class SeminoteEdgeError(Exception):
    """Root of every error the edge node raises on purpose."""


class AudioInputError(SeminoteEdgeError):
    """Audio could not be opened or decoded.

    ``source`` names what was being read (a path or a session id); ``reason`` is one line for people.
    """

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class ConfigError(SeminoteEdgeError):
    """A setting has a value the edge cannot run with."""

    def __init__(self, setting: str, reason: str) -> None:
        super().__init__(f"setting {setting}: {reason}")
        self.setting = setting
        self.reason = reason


class PipelineError(SeminoteEdgeError):
    """The streaming pipeline was used out of order."""


class TicketError(SeminoteEdgeError):
    """A session ticket was refused. ``reason`` is one line safe to show the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TicketMalformed(TicketError):
    """The token is not a ticket at all: wrong shape, encoding, fields or size."""


class TicketExpired(TicketError):
    """The ticket's validity window (``iat`` .. ``exp``, with clock skew) does not contain now."""


class TicketForged(TicketError):
    """No trusted key verifies the ticket's signature."""


class TicketWrongEdge(TicketError):
    """The ticket is valid but was issued for another edge."""


class TicketReplayed(TicketError):
    """The ticket was already used once (tickets are single use)."""


class TicketGuardFull(TicketError):
    """The replay guard remembers as many unexpired tickets as it may; refusing is the safe answer."""
