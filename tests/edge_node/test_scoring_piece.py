"""Reference pieces: MIDI and MusicXML loading, bars and onset groups, and clear errors for bad input."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pretty_midi
import pytest

from edge_node.material import midi
from edge_node.scoring import (
    PieceEmpty,
    PieceTooLarge,
    PieceUnreadable,
    load_piece,
    piece_from_midi,
    piece_from_notes,
)
from edge_node.scoring.piece import MAX_PIECE_BYTES, MAX_PIECE_NOTES

MUSICXML = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE score-partwise PUBLIC "-//Recordare//DTD MusicXML 3.1 Partwise//EN"
  "http://www.musicxml.org/dtds/partwise.dtd">
<score-partwise version="3.1">
  <part-list><score-part id="P1"><part-name>Piano</part-name></score-part></part-list>
  <part id="P1">
    <measure number="1">
      <attributes><divisions>1</divisions><time><beats>4</beats><beat-type>4</beat-type></time></attributes>
      <direction placement="above"><direction-type><metronome><beat-unit>quarter</beat-unit>
        <per-minute>60</per-minute></metronome></direction-type><sound tempo="60"/></direction>
      <note><pitch><step>C</step><octave>4</octave></pitch><duration>1</duration><type>quarter</type></note>
      <note><pitch><step>E</step><octave>4</octave></pitch><duration>1</duration><type>quarter</type></note>
      <note><pitch><step>G</step><octave>4</octave></pitch><duration>2</duration><type>half</type></note>
    </measure>
    <measure number="2">
      <note><pitch><step>C</step><octave>5</octave></pitch><duration>2</duration><type>half</type></note>
      <note><chord/><pitch><step>E</step><octave>5</octave></pitch><duration>2</duration><type>half</type></note>
      <note><rest/><duration>2</duration><type>half</type></note>
    </measure>
  </part>
</score-partwise>
"""


def _midi_bytes(pm: pretty_midi.PrettyMIDI) -> bytes:
    buf = io.BytesIO()
    pm.write(buf)
    return buf.getvalue()


def test_midi_piece_keeps_every_note_in_order_with_bars() -> None:
    gen = midi.melody(np.random.default_rng(3), lo=55, hi=84, n_notes=30, bpm=90.0)
    piece = load_piece(_midi_bytes(gen.midi))
    written = sorted(gen.midi.instruments[0].notes, key=lambda n: n.start)
    assert [n.pitch for n in piece.notes] == [n.pitch for n in written]
    assert np.allclose([n.onset_s for n in piece.notes], [n.start for n in written], atol=1e-3)
    assert piece.n_groups == 30  # a melody: one note per onset group
    assert piece.notes[0].bar == 1
    bar_s = 4 * 60.0 / 90.0
    for note in piece.notes:  # bars follow the 4/4 grid from the MIDI's downbeats
        assert note.bar == int((note.onset_s + 1e-6) // bar_s) + 1 - int((piece.notes[0].onset_s + 1e-6) // bar_s)
    assert piece.bpm == pytest.approx(90.0, rel=1e-4)


def test_midi_piece_from_a_path(tmp_path: Path) -> None:
    gen = midi.chords(np.random.default_rng(1), n_chords=6)
    path = tmp_path / "chords.mid"
    gen.midi.write(str(path))
    piece = load_piece(path)
    assert piece.name == "chords"
    assert piece.n_groups == 6  # chords group into one onset group each
    assert sum(len(g) for g in piece.groups) == len(gen.midi.instruments[0].notes)


def test_musicxml_piece_has_pitches_times_chords_and_bars(tmp_path: Path) -> None:
    path = tmp_path / "piece.musicxml"
    path.write_text(MUSICXML)
    piece = load_piece(path)
    assert [n.pitch for n in piece.notes] == [60, 64, 67, 72, 76]
    assert [n.onset_s for n in piece.notes] == pytest.approx([0.0, 1.0, 2.0, 4.0, 4.0])  # 60 BPM
    assert [n.bar for n in piece.notes] == [1, 1, 1, 2, 2]
    assert piece.groups[-1] == (3, 4)  # the chord is one onset group
    assert piece.bar_start_groups == (0, 3)
    assert piece.bpm == pytest.approx(60.0)


def test_compressed_musicxml_loads_from_bytes() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("META-INF/container.xml", (
            '<?xml version="1.0"?><container><rootfiles>'
            '<rootfile full-path="score.xml" media-type="application/vnd.recordare.musicxml+xml"/>'
            "</rootfiles></container>"))
        zf.writestr("score.xml", MUSICXML)
    piece = load_piece(buf.getvalue())
    assert [n.pitch for n in piece.notes] == [60, 64, 67, 72, 76]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", PieceEmpty),
        (b"hello, this is not music", PieceUnreadable),
        (b"MThd\x00\x00\x00\x06garbage", PieceUnreadable),
        (b"<?xml version='1.0'?><score-partwise><part-list>", PieceUnreadable),
        (b"PK\x03\x04 broken zip", PieceUnreadable),
    ],
)
def test_unreadable_or_empty_bytes_give_a_clear_error(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        load_piece(data)
    assert "\n" not in str(info.value) and str(info.value).startswith("reference piece <bytes>:")


def test_midi_without_notes_is_empty() -> None:
    pm = pretty_midi.PrettyMIDI()
    pm.instruments.append(pretty_midi.Instrument(0))
    with pytest.raises(PieceEmpty, match="no notes"):
        load_piece(_midi_bytes(pm))


def test_missing_file_and_directory_are_unreadable(tmp_path: Path) -> None:
    with pytest.raises(PieceUnreadable, match="no such file"):
        load_piece(tmp_path / "nope.mid")
    with pytest.raises(PieceUnreadable, match="directory"):
        load_piece(tmp_path)


def test_pieces_over_the_limits_are_refused(tmp_path: Path) -> None:
    big = tmp_path / "huge.mid"
    with open(big, "wb") as f:  # sparse: no disk used
        f.truncate(MAX_PIECE_BYTES + 1)
    with pytest.raises(PieceTooLarge, match="bytes"):
        load_piece(big)
    too_many = [(60 + i % 12, i * 0.1, 0.1, 64) for i in range(MAX_PIECE_NOTES + 1)]
    with pytest.raises(PieceTooLarge, match="notes"):
        piece_from_notes(too_many)


def test_a_piece_with_thousands_of_notes_loads() -> None:
    pm = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    inst = pretty_midi.Instrument(0)
    rng = np.random.default_rng(0)
    for i in range(5000):
        inst.notes.append(pretty_midi.Note(70, int(rng.integers(55, 80)), i * 0.25, i * 0.25 + 0.2))
    pm.instruments.append(inst)
    piece = piece_from_midi(pm)
    assert len(piece.notes) == 5000
    assert piece.n_bars == 5000 // 8


def test_partitura_example_musicxml_with_voices_and_a_chord() -> None:
    import partitura

    piece = load_piece(partitura.EXAMPLE_MUSICXML)
    # A4 whole note in voice 1 against a C5+E5 half-note chord in voice 2, no tempo marking (100 BPM)
    assert [(n.pitch, n.onset_s) for n in piece.notes] == [(69, 0.0), (72, 1.2), (76, 1.2)]
    assert piece.groups == ((0,), (1, 2))
    assert piece.notes[0].duration_s == pytest.approx(2.4)
