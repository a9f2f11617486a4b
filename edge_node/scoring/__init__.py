"""Practice feedback against a reference piece: loading pieces, following the performance,
per-note verdicts (``score`` events) and the end-of-session ``summary``.

Entry points for sessions and the CLI: :func:`load_piece` and :class:`ScoreObserver`.
"""

from .errors import PieceEmpty, PieceError, PieceTooLarge, PieceUnknown, PieceUnreadable, ScoringError
from .follower import ScoreFollower
from .library import PieceLibrary
from .observer import ScoreObserver
from .piece import Piece, RefNote, load_piece, piece_from_midi, piece_from_notes
from .verdicts import Judgement, PlayedNote

__all__ = [
    "Judgement",
    "Piece",
    "PieceEmpty",
    "PieceError",
    "PieceLibrary",
    "PieceTooLarge",
    "PieceUnknown",
    "PieceUnreadable",
    "PlayedNote",
    "RefNote",
    "ScoreFollower",
    "ScoreObserver",
    "ScoringError",
    "load_piece",
    "piece_from_midi",
    "piece_from_notes",
]
