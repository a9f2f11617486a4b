"""Reference pieces: the notes a student is expected to play, from MIDI or MusicXML.

A :class:`Piece` is an immutable list of :class:`RefNote` in written order, grouped into *onset
groups* (notes written to start together: a chord, or one note of a melody) and *bars*. Times are
seconds at the written tempo ("score seconds"); the follower maps them to the performance's own time.

MIDI is read with pretty_midi (bars from its time signatures, 4/4 when none), MusicXML (``.musicxml``,
``.xml``, compressed ``.mxl``) with partitura. Drum tracks, zero-length and grace notes are dropped.
Everything coming from outside is bounded: :data:`MAX_PIECE_BYTES` and :data:`MAX_PIECE_NOTES`.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
import zipfile
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import PieceEmpty, PieceTooLarge, PieceUnreadable

MAX_PIECE_BYTES = 8 * 1024 * 1024  # larger files are refused before parsing
MAX_PIECE_NOTES = 20_000  # a long sonata movement has ~5,000; beyond this is not a practice piece
GROUP_TOLERANCE_S = 0.03  # written onsets closer than this (score seconds) form one onset group
DEFAULT_XML_BPM = 100.0  # quarter-note tempo for MusicXML without a tempo marking
MIN_NOTE_DURATION_S = 1e-3  # shorter written notes (grace notes, zero-length MIDI) are dropped


@dataclass(frozen=True, slots=True)
class RefNote:
    """One written note. ``onset_s``/``duration_s`` are score seconds; ``bar`` counts from 1."""

    index: int
    pitch: int
    onset_s: float
    duration_s: float
    velocity: int
    bar: int
    group: int


@dataclass(frozen=True)
class Piece:
    """A reference piece ready for following: notes, onset groups and bar starts."""

    name: str
    notes: tuple[RefNote, ...]
    groups: tuple[tuple[int, ...], ...]  # note indices of each onset group, in time order
    group_onset_s: tuple[float, ...]
    group_bar: tuple[int, ...]
    bar_start_groups: tuple[int, ...]  # first group of each bar that has notes, in order
    bpm: float  # written quarter-note tempo at the start (informative)
    group_pitches: tuple[frozenset[int], ...] = field(init=False, repr=False)
    bar_start_bars: tuple[int, ...] = field(init=False, repr=False)  # bar of each bar_start_groups entry

    def __post_init__(self) -> None:
        pitches = tuple(frozenset(self.notes[i].pitch for i in g) for g in self.groups)
        object.__setattr__(self, "group_pitches", pitches)
        object.__setattr__(self, "bar_start_bars", tuple(self.group_bar[g] for g in self.bar_start_groups))

    @property
    def n_groups(self) -> int:
        return len(self.groups)

    @property
    def n_bars(self) -> int:
        return self.notes[-1].bar if self.notes else 0

    @property
    def duration_s(self) -> float:
        return max(n.onset_s + n.duration_s for n in self.notes)


def piece_from_notes(
    notes: Sequence[tuple[int, float, float, int]],
    downbeats_s: Sequence[float] = (),
    name: str = "piece",
    bpm: float = 120.0,
    source: str = "<notes>",
) -> Piece:
    """Build a :class:`Piece` from ``(pitch, onset_s, duration_s, velocity)`` tuples.

    ``downbeats_s`` are bar starts in score seconds (none: one bar of 4 beats at ``bpm``).
    """
    kept = [
        (int(p), float(o), float(d), int(v)) for p, o, d, v in notes
        if d >= MIN_NOTE_DURATION_S and 0 <= p <= 127 and np.isfinite(o)
    ]
    if not kept:
        raise PieceEmpty(source, "contains no notes to play")
    if len(kept) > MAX_PIECE_NOTES:
        raise PieceTooLarge(source, f"{len(kept)} notes, more than the limit of {MAX_PIECE_NOTES}")
    kept.sort(key=lambda n: (n[1], n[0]))
    if downbeats_s:
        bars = sorted(float(b) for b in downbeats_s)
    else:
        bar_s = 4 * 60.0 / bpm
        bars = [kept[0][1] + i * bar_s for i in range(int((kept[-1][1] - kept[0][1]) / bar_s) + 2)]
    # renumber bars so that the first bar holding a note is bar 1
    bar_of = [max(0, bisect_right(bars, o + 1e-6) - 1) for _, o, _, _ in kept]
    first_bar = bar_of[0]
    ref: list[RefNote] = []
    groups: list[list[int]] = []
    group_onsets: list[float] = []
    for i, ((pitch, onset, dur, vel), b) in enumerate(zip(kept, bar_of, strict=True)):
        if not groups or onset - group_onsets[-1] > GROUP_TOLERANCE_S:
            groups.append([])
            group_onsets.append(onset)
        groups[-1].append(i)
        ref.append(RefNote(i, pitch, onset, dur, max(1, min(127, vel)), b - first_bar + 1, len(groups) - 1))
    group_bar = tuple(ref[g[0]].bar for g in groups)
    bar_starts = tuple(g for g in range(len(groups)) if g == 0 or group_bar[g] != group_bar[g - 1])
    return Piece(
        name=name,
        notes=tuple(ref),
        groups=tuple(tuple(g) for g in groups),
        group_onset_s=tuple(group_onsets),
        group_bar=group_bar,
        bar_start_groups=bar_starts,
        bpm=float(bpm),
    )


def piece_from_midi(pm: object, name: str = "piece", source: str = "<midi>") -> Piece:
    """A :class:`Piece` from a ``pretty_midi.PrettyMIDI`` object (all non-drum instruments)."""
    import pretty_midi

    if not isinstance(pm, pretty_midi.PrettyMIDI):
        raise TypeError("piece_from_midi expects a pretty_midi.PrettyMIDI")
    notes = [
        (n.pitch, n.start, n.end - n.start, n.velocity)
        for inst in pm.instruments if not inst.is_drum for n in inst.notes
    ]
    if len(notes) > MAX_PIECE_NOTES:
        raise PieceTooLarge(source, f"{len(notes)} notes, more than the limit of {MAX_PIECE_NOTES}")
    _, tempi = pm.get_tempo_changes()
    bpm = float(tempi[0]) if len(tempi) else 120.0
    try:
        downbeats = [float(d) for d in pm.get_downbeats()]
    except (ValueError, IndexError):
        downbeats = []
    return piece_from_notes(notes, downbeats, name=name, bpm=bpm, source=source)


def load_piece(source: str | os.PathLike[str] | bytes, name: str | None = None) -> Piece:
    """Load a reference piece from a path or from the file's bytes (MIDI or MusicXML, sniffed).

    Raises :class:`PieceUnreadable`, :class:`PieceEmpty` or :class:`PieceTooLarge` with a one-line
    reason; never anything else for bad input.
    """
    if isinstance(source, bytes | bytearray):
        data = bytes(source)
        label = "<bytes>"
        stem = name or "piece"
    else:
        path = Path(source)
        label = str(path)
        stem = name or path.stem
        try:
            size = path.stat().st_size
        except FileNotFoundError as exc:
            raise PieceUnreadable(label, "no such file") from exc
        except OSError as exc:
            raise PieceUnreadable(label, f"cannot read ({exc.strerror or exc})") from exc
        if path.is_dir():
            raise PieceUnreadable(label, "is a directory, not a piece")
        if size > MAX_PIECE_BYTES:
            raise PieceTooLarge(label, f"{size} bytes, more than the limit of {MAX_PIECE_BYTES}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise PieceUnreadable(label, f"cannot read ({exc.strerror or exc})") from exc
    if len(data) > MAX_PIECE_BYTES:
        raise PieceTooLarge(label, f"{len(data)} bytes, more than the limit of {MAX_PIECE_BYTES}")
    if not data.strip():
        raise PieceEmpty(label, "is empty")
    kind = _sniff(data)
    if kind == "midi":
        return _load_midi(data, label, stem)
    if kind == "musicxml":
        return _load_musicxml(data, label, stem)
    raise PieceUnreadable(label, "not a MIDI or MusicXML file")


def _sniff(data: bytes) -> str | None:
    if data[:4] == b"MThd" or data[:4] == b"RIFF" and data[8:12] == b"RMID":
        return "midi"
    if data[:2] == b"PK":
        return "musicxml"  # compressed MusicXML (.mxl) is a zip
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<") and (b"score-partwise" in head or b"score-timewise" in head or b"<?xml" in head):
        return "musicxml"
    return None


def _load_midi(data: bytes, label: str, name: str) -> Piece:
    import pretty_midi

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pm = pretty_midi.PrettyMIDI(io.BytesIO(data))
    except Exception as exc:  # mido/pretty_midi raise many types (OSError, EOFError, KeyError, ...)
        raise PieceUnreadable(label, f"not a readable MIDI file ({_describe(exc)})") from exc
    return piece_from_midi(pm, name=name, source=label)


def _load_musicxml(data: bytes, label: str, name: str) -> Piece:
    import partitura
    import partitura.score as pscore

    if data[:2] == b"PK" and not _is_valid_zip(data):
        raise PieceUnreadable(label, "not a readable MusicXML file (corrupt .mxl archive)")
    suffix = ".mxl" if data[:2] == b"PK" else ".musicxml"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"piece{suffix}"
        path.write_bytes(data)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                score = partitura.load_musicxml(str(path), quiet=True)
        except Exception as exc:  # lxml, zipfile and partitura's own errors
            raise PieceUnreadable(label, f"not a readable MusicXML file ({_describe(exc)})") from exc
    parts = list(score.parts)
    if not parts:
        raise PieceEmpty(label, "contains no parts")
    bpm = DEFAULT_XML_BPM
    for part in parts:
        tempi = sorted(part.iter_all(pscore.Tempo), key=lambda t: t.start.t)
        if tempi:
            bpm = 60e6 / float(tempi[0].microseconds_per_quarter)
            break
    sec_per_quarter = 60.0 / bpm
    notes: list[tuple[int, float, float, int]] = []
    downbeats: list[float] = []
    for k, part in enumerate(parts):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            na = part.note_array()
        for row in na:
            notes.append((
                int(row["pitch"]),
                float(row["onset_quarter"]) * sec_per_quarter,
                float(row["duration_quarter"]) * sec_per_quarter,
                64,
            ))
            if len(notes) > MAX_PIECE_NOTES:
                raise PieceTooLarge(label, f"more than the limit of {MAX_PIECE_NOTES} notes")
        if k == 0:
            downbeats = [float(part.quarter_map(m.start.t)) * sec_per_quarter for m in part.measures]
    return piece_from_notes(notes, downbeats, name=name, bpm=bpm, source=label)


def _is_valid_zip(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return zf.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0][:160] if text else type(exc).__name__) or type(exc).__name__
