"""``seminote-edge analyze``: jsonl/table output and bad input, through a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from edge_node.material import midi, sets

TIMEOUT_S = 120


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_node", "analyze", *args],
        capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
    )


def test_jsonl_prints_only_events_and_they_match_the_midi(heldout_onsets: list[sets.Item]) -> None:
    import mir_eval

    item = heldout_onsets[0]
    proc = analyze(str(item.audio), "--format", "jsonl")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [e["seq"] for e in events] == list(range(len(events)))
    onsets = np.array([e["t"] for e in events if e["type"] == "onset"])
    f, _, _ = mir_eval.onset.f_measure(midi.onsets_of(item.piece.midi), onsets, window=0.05)
    assert f >= 0.9
    notes = [e for e in events if e["type"] == "note"]
    assert notes and all(e["source"] == "kernel" and 1 <= e["velocity"] <= 127 for e in notes)


def test_table_format_is_readable(heldout_onsets: list[sets.Item]) -> None:
    proc = analyze(str(heldout_onsets[0].audio), "--format", "table")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["time", "event", "detail"]
    assert any(" note " in line and "vel" in line for line in lines)
    assert any(" tempo " in line and "BPM" in line for line in lines)


def test_other_containers_and_rates_are_resampled(tmp_path: Path, heldout_onsets: list[sets.Item]) -> None:
    """A 44.1 kHz stereo FLAC and an MP3 are decoded, downmixed and resampled to the same onsets."""
    src = heldout_onsets[0].audio
    audio, rate = sf.read(src, dtype="float32")
    stereo = np.stack([audio, audio], axis=1)
    flac = tmp_path / "take.flac"
    sf.write(flac, stereo, rate, subtype="PCM_16")
    mp3 = tmp_path / "take.mp3"
    with av.open(str(mp3), "w") as out:
        stream = out.add_stream("libmp3lame", rate=44_100, layout="stereo")
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=44_100)
        frame = av.AudioFrame.from_ndarray(stereo.T.copy(), format="fltp", layout="stereo")
        frame.sample_rate = rate
        for f in resampler.resample(frame):
            for packet in stream.encode(f):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)

    def onsets(path: Path) -> np.ndarray:
        proc = analyze(str(path))
        assert proc.returncode == 0, proc.stderr
        return np.array([json.loads(x)["t"] for x in proc.stdout.splitlines() if '"onset"' in x])

    import mir_eval

    ref = onsets(src)
    # 16-bit FLAC at 44.1 kHz, stereo: the same onsets to within 2 ms (quantisation may move one
    # borderline onset); MP3: the encoder's priming delay shifts everything by a few ms.
    f_flac, _, _ = mir_eval.onset.f_measure(ref, onsets(flac), window=0.002)
    assert f_flac >= 0.97
    f_mp3, _, _ = mir_eval.onset.f_measure(ref, onsets(mp3), window=0.05)
    assert f_mp3 >= 0.95


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "no such file"),
        (b"", "not a readable audio file"),
        (b"RIFF\x00\x00\x00\x00WAVEgarbage" * 10, "not a readable audio file"),
        (bytes(range(256)) * 64, "not a readable audio file"),
    ],
)
def test_unreadable_input_is_one_line_error_and_exit_1(tmp_path: Path, content: bytes | None, needle: str) -> None:
    path = tmp_path / "bad.wav"
    if content is not None:
        path.write_bytes(content)
    proc = analyze(str(path))
    assert proc.returncode == 1
    assert proc.stdout == ""
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "Traceback" not in proc.stderr


def test_directory_and_usage_errors(tmp_path: Path) -> None:
    proc = analyze(str(tmp_path))
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    proc = analyze(str(tmp_path), "--mode", "bogus")
    assert proc.returncode == 2


def test_video_without_audio_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "silent.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height = 32, 32
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 40, dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    proc = analyze(str(path))
    assert proc.returncode == 1 and "no audio stream" in proc.stderr


def test_silent_clipped_and_long_files_give_clear_results(tmp_path: Path) -> None:
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(5 * 48_000, dtype=np.float32), 48_000)
    proc = analyze(str(silent))
    assert proc.returncode == 0
    types = {json.loads(x)["type"] for x in proc.stdout.splitlines()}
    assert types == {"dynamics"}  # levels only: no onset, pitch, note or tempo in silence

    t = np.arange(4 * 48_000) / 48_000
    clipped = np.clip(3.0 * np.sin(2 * np.pi * 220 * t) * (t % 0.5 < 0.3), -1, 1)
    path = tmp_path / "clipped.wav"
    sf.write(path, clipped.astype(np.float32), 48_000)
    proc = analyze(str(path))
    assert proc.returncode == 0
    events = [json.loads(x) for x in proc.stdout.splitlines()]
    notes = [e for e in events if e["type"] == "note" and e["end"] is None]
    assert notes and {e["pitch"] for e in notes} == {57}  # A3, despite the clipping
    assert all(e["velocity"] == 127 for e in notes)

    long = tmp_path / "long.flac"  # 20 minutes: decoded and analysed incrementally
    rng = np.random.default_rng(0)
    sf.write(long, (rng.standard_normal(20 * 60 * 8_000) * 0.001).astype(np.float32), 8_000)
    proc = analyze(str(long))
    assert proc.returncode == 0, proc.stderr
    last = json.loads(proc.stdout.splitlines()[-1])
    assert last["t"] == pytest.approx(1200.0, abs=0.2)
