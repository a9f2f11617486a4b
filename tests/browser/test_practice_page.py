"""The practice page in a real headless Chromium: its fake microphone plays a rendered piano piece, the
page streams it to a served edge over WebRTC, and the onsets it receives match the MIDI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import mir_eval
import numpy as np
import pytest
import soundfile as sf

from edge_node.material import midi, render
from edge_node.tickets import generate_keypair, private_key_pem

CHROMIUM = Path("/usr/bin/chromium")
LEAD_S = 2.0  # silence before the piece: covers the time from capture start to the first packet
TAIL_S = 1.5
WINDOW_S = 0.05

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium is not installed (scripts/setup.sh installs it)"),
]


@pytest.fixture(scope="module")
def piece_wav(tmp_path_factory) -> tuple[Path, np.ndarray, float]:
    """A 16-bit WAV for Chromium's fake microphone, and the onsets (s, in the file's time)."""
    piece = midi.melody(np.random.default_rng(7), lo=48, hi=84, n_notes=20, bpm=110)
    audio = render.load(render.render(piece.midi))
    audio = np.concatenate([np.zeros(int(LEAD_S * 48000), np.float32), audio, np.zeros(int(TAIL_S * 48000), np.float32)])
    path = tmp_path_factory.mktemp("browser") / "piece.wav"
    sf.write(path, audio, 48000, subtype="PCM_16")
    return path, midi.onsets_of(piece.midi) + LEAD_S, audio.size / 48000


@pytest.fixture(scope="module")
def edge_url(tmp_path_factory) -> Iterator[str]:
    key = tmp_path_factory.mktemp("keys") / "ticket.pem"
    key.write_text(private_key_pem(generate_keypair()[0]))
    env = dict(os.environ, SEMINOTE_EDGE_SERVER__TICKET_PRIVATE_KEY=str(key),
               SEMINOTE_EDGE_SERVER__DEV_TICKETS="true")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_node", "serve", "--port", "0", "--log-format", "json"],
        env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )
    assert proc.stderr is not None
    url = None
    deadline = time.monotonic() + 60
    while url is None and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        if '"edge listening"' in line:
            url = json.loads(line)["url"]
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    try:
        assert url, "edge did not start"
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()


def best_alignment(reference: np.ndarray, estimated: np.ndarray) -> tuple[float, float]:
    """(offset, F) maximising the onset F-measure over every offset that pairs an estimate with a
    reference onset: the capture start is unknown, the rhythm is irregular, so only one fits."""
    best = (0.0, 0.0)
    for offset in np.unique(np.round((estimated[:, None] - reference[None, :]).ravel(), 3)):
        f, _, _ = mir_eval.onset.f_measure(reference, np.sort(estimated - offset), window=WINDOW_S)
        if f > best[1]:
            best = (float(offset), float(f))
    return best


def test_page_streams_the_microphone_and_shows_feedback_matching_the_midi(piece_wav, edge_url) -> None:
    from playwright.sync_api import sync_playwright

    wav, reference, file_s = piece_wav
    args = [
        "--headless", "--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={wav}",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    ]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        try:
            page = browser.new_page()
            page.goto(edge_url + "?autostart=1")
            page.wait_for_function("window.seminote && window.seminote.state === 'live'", timeout=30_000)
            page.wait_for_function("window.seminote.events.some(r => r.event.type === 'onset')", timeout=30_000)
            # The fake microphone loops the file; stream one pass of it after the session went live.
            page.wait_for_timeout(int(file_s * 1000))
            page.evaluate("window.seminote.stop()")
            page.wait_for_function("window.seminote.state === 'stopped'", timeout=10_000)
            events = page.evaluate("window.seminote.events.map(r => r.event)")
            shown = page.inner_text("#counts")
            pitch_text = page.inner_text("#pitch-note")
            assert page.evaluate("window.seminote.error") is None
        finally:
            browser.close()

    seqs = [e["seq"] for e in events]
    assert seqs == list(range(len(seqs))), "events arrive in order, from seq 0"
    estimated = np.array([e["t"] for e in events if e["type"] == "onset"])
    offset, _ = best_alignment(reference, estimated)
    # Only the first pass of the looping file is scored.
    first_pass = estimated[estimated - offset < file_s - 0.05]
    f, precision, recall = mir_eval.onset.f_measure(reference, np.sort(first_pass - offset), window=WINDOW_S)
    print(f"\nbrowser onsets: F={f:.3f} P={precision:.3f} R={recall:.3f} over {reference.size} notes, "
          f"capture offset {offset:+.3f} s")
    assert f >= 0.9
    assert {"pitch", "dynamics", "note"} <= {e["type"] for e in events}
    assert f"{estimated.size} onsets" in shown, "the page displays what it received"
    assert pitch_text != "–"
