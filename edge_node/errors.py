"""Errors raised by the edge node.

    SeminoteEdgeError
    ├── AudioInputError        the audio could not be read or decoded (file or live frames)
    ├── ConfigError            a setting is invalid (raised at start-up with the setting's name)
    ├── PipelineError          the analysis pipeline was misused (e.g. fed after finish())
    ├── TicketError            a session ticket was refused (``reason`` is safe to show the client)
    │   ├── TicketMalformed    not a ticket: shape, encoding, fields, size
    │   ├── TicketExpired      outside its validity window
    │   ├── TicketForged       no trusted key verifies its signature
    │   ├── TicketWrongEdge    issued for another edge
    │   ├── TicketReplayed     already used (tickets are single use)
    │   └── TicketGuardFull    too many unexpired tickets remembered to accept another
    ├── WhipRefused            (client side) the edge refused a request: ``status``, ``code``, ``message``
    ├── SessionError           a live practice session could not be opened or found
    │   ├── OfferRejected      the SDP offer cannot be served (``code``: malformed_sdp, no_audio, ...)
    │   ├── CapacityExceeded   the edge runs its maximum of sessions (``retry_after_s``)
    │   ├── EdgeDraining       the edge is shutting down or draining (``retry_after_s``)
    │   ├── EdgeOverloaded     the event loop lags; one more session would hurt the open ones
    │   ├── SessionExists      a session with that id is already open
    │   └── SessionNotFound    no open session has that id
    └── SyncError              result sync (outbox → NATS) failed or was misused
        └── OutboxError        the outbox was used out of order (closed, wrong event type)
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


class SessionError(SeminoteEdgeError):
    """A live practice session could not be opened, found or used. ``reason`` is safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OfferRejected(SessionError):
    """The WHIP offer cannot be served. ``code`` names why, for programs (``malformed_sdp``,
    ``no_audio``, ``video_not_supported``, ``no_data_channel``, ``unsupported_codec``, ``bad_direction``)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class CapacityExceeded(SessionError):
    """The edge already runs ``max_sessions`` sessions; try again after ``retry_after_s``."""

    def __init__(self, max_sessions: int, retry_after_s: int) -> None:
        super().__init__(f"edge is at its limit of {max_sessions} sessions")
        self.max_sessions = max_sessions
        self.retry_after_s = retry_after_s


class EdgeDraining(SessionError):
    """The edge takes no new sessions (shutting down or draining); try another or retry later."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__("edge is draining and takes no new sessions")
        self.retry_after_s = retry_after_s


class EdgeOverloaded(SessionError):
    """The edge's event loop runs late by ``lag_s``: the open sessions already take all the CPU it
    gets, and one more would delay everyone's feedback. Try another edge or after ``retry_after_s``."""

    def __init__(self, lag_s: float, retry_after_s: int) -> None:
        super().__init__(f"edge is overloaded (event loop {lag_s * 1000:.0f} ms late)")
        self.lag_s = lag_s
        self.retry_after_s = retry_after_s


class SessionExists(SessionError):
    """A session with this id is already open on this edge."""


class SessionNotFound(SessionError):
    """No open session has this id."""


# --- result sync (issue 5) ---
class SyncError(SeminoteEdgeError):
    """Result sync (outbox → relay → NATS JetStream) failed or was misused."""


class OutboxError(SyncError):
    """The outbox was used out of order (after close, or with an event it does not take)."""


class WhipRefused(SeminoteEdgeError):
    """The edge refused a WHIP request (client side). ``status`` is HTTP's; ``code``/``message`` the
    edge's reason (``code`` is ``"http"`` when the body was not the edge's JSON error)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"edge answered {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
