"""The edge's library of reference pieces, addressed by id from tickets and ``set_piece``.

A piece id names a file in ``AnalysisSettings.pieces_dir``: ``<id>.mid``, ``<id>.midi``,
``<id>.musicxml``, ``<id>.xml`` or ``<id>.mxl``. Ids are restricted to ``[A-Za-z0-9_.-]`` (no path
separators, no leading dot) so a client cannot read outside the directory. Parsed pieces are kept in
a small LRU cache: sessions practising the same piece share one parse.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from pathlib import Path

from .errors import PieceUnknown
from .piece import Piece, load_piece

PIECE_ID_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")
PIECE_SUFFIXES = (".mid", ".midi", ".musicxml", ".xml", ".mxl")
CACHE_PIECES = 64


class PieceLibrary:
    """Resolves piece ids to parsed pieces; thread-safe (loads run in an executor)."""

    def __init__(self, root: Path | None, cache_pieces: int = CACHE_PIECES) -> None:
        self.root = root.resolve() if root is not None else None
        self._cache: OrderedDict[str, Piece] = OrderedDict()
        self._cache_pieces = cache_pieces
        self._lock = threading.Lock()

    def path_of(self, piece_id: str) -> Path:
        """The file behind ``piece_id``; :class:`PieceUnknown` if there is none we may serve."""
        if self.root is None:
            raise PieceUnknown(piece_id, "this edge has no piece library (analysis.pieces_dir is unset)")
        if not PIECE_ID_RE.match(piece_id):
            raise PieceUnknown(piece_id[:40], "piece ids are 1-128 characters of A-Z a-z 0-9 _ . -")
        for suffix in PIECE_SUFFIXES:
            candidate = self.root / f"{piece_id}{suffix}"
            if candidate.is_file() and candidate.resolve().parent == self.root:
                return candidate
        raise PieceUnknown(piece_id, "no such piece in the library")

    def load(self, piece_id: str) -> Piece:
        """Parse (or fetch from the cache) the piece named ``piece_id``."""
        with self._lock:
            cached = self._cache.get(piece_id)
            if cached is not None:
                self._cache.move_to_end(piece_id)
                return cached
        piece = load_piece(self.path_of(piece_id), name=piece_id)
        with self._lock:
            self._cache[piece_id] = piece
            while len(self._cache) > self._cache_pieces:
                self._cache.popitem(last=False)
        return piece
