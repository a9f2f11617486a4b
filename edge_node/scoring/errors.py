"""Errors raised by score following (reference pieces and the follower).

    SeminoteEdgeError                (edge_node.errors)
    └── ScoringError                 score following could not be set up
        └── PieceError               a reference piece was refused; ``reason`` is one line for people
            ├── PieceUnreadable      not a MIDI or MusicXML file we can parse (or no such file)
            ├── PieceEmpty           parsed, but holds no playable notes
            ├── PieceTooLarge        over the explicit limits (bytes, notes)
            └── PieceUnknown         a piece id the edge's library does not hold (or may not serve)
"""

from __future__ import annotations

from ..errors import SeminoteEdgeError


class ScoringError(SeminoteEdgeError):
    """Root of the errors of :mod:`edge_node.scoring`."""


class PieceError(ScoringError):
    """A reference piece was refused. ``source`` names it (a path or ``<bytes>``)."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"reference piece {source}: {reason}")
        self.source = source
        self.reason = reason


class PieceUnreadable(PieceError):
    """The piece is not a MIDI or MusicXML document that the parsers accept."""


class PieceEmpty(PieceError):
    """The piece parsed but contains no notes to play."""


class PieceTooLarge(PieceError):
    """The piece exceeds :data:`~edge_node.scoring.piece.MAX_PIECE_BYTES` or ``MAX_PIECE_NOTES``."""


class PieceUnknown(PieceError):
    """A session asked for a piece id that is not in the edge's piece library."""
