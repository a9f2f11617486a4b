"""Render generated MIDI to 48 kHz audio with fluidsynth and a General MIDI soundfont.

Renders are cached by a hash of (MIDI bytes, soundfont, options), so repeated test and benchmark runs
do not re-render. fluidsynth's own reverb and chorus are off unless asked for; ``noise_dbfs`` adds
white noise after rendering (seeded), to model a room/microphone floor.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import platformdirs
import pretty_midi
import soundfile as sf

SAMPLE_RATE_HZ = 48_000
SOUNDFONT_DIRS = (Path("/usr/share/sounds/sf2"), Path("/usr/share/soundfonts"))


class RenderError(RuntimeError):
    """fluidsynth is missing or failed."""


def find_soundfont(name: str) -> Path:
    """Locate a soundfont by file name (``FluidR3_GM.sf2``, ``TimGM6mb.sf2``) or path."""
    p = Path(name)
    if p.is_file():
        return p
    for d in SOUNDFONT_DIRS:
        if (d / name).is_file():
            return d / name
    if name == "TimGM6mb.sf2":  # also shipped inside the pretty_midi wheel
        bundled = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
        if bundled.is_file():
            return bundled
    raise RenderError(f"soundfont {name} not found (apt-get install fluid-soundfont-gm timgm6mb-soundfont)")


@dataclass(frozen=True)
class RenderOptions:
    soundfont: str = "FluidR3_GM.sf2"
    gain: float = 0.5
    reverb: bool = False
    noise_dbfs: float | None = None
    seed: int = 0
    tail_s: float = 1.0


def cache_dir() -> Path:
    d = Path(platformdirs.user_cache_dir("seminote")) / "material"
    d.mkdir(parents=True, exist_ok=True)
    return d


def render(pm: pretty_midi.PrettyMIDI, options: RenderOptions = RenderOptions()) -> Path:
    """Render to a cached 48 kHz mono 16-bit... float WAV file and return its path."""
    buf = io.BytesIO()
    pm.write(buf)
    midi_bytes = buf.getvalue()
    sf_path = find_soundfont(options.soundfont)
    key = hashlib.sha256(midi_bytes + repr(options).encode() + str(sf_path).encode()).hexdigest()[:20]
    out = cache_dir() / f"{key}.wav"
    if out.exists():
        return out
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise RenderError("fluidsynth is not installed (apt-get install fluidsynth)")
    with tempfile.TemporaryDirectory() as tmp:
        mid = Path(tmp) / "in.mid"
        mid.write_bytes(midi_bytes)
        raw = Path(tmp) / "out.wav"
        cmd = [
            exe, "-ni", "-q", "-F", str(raw), "-T", "wav", "-O", "float", "-r", str(SAMPLE_RATE_HZ),
            "-g", str(options.gain), "-R", "1" if options.reverb else "0", "-C", "0",
            str(sf_path), str(mid),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0 or not raw.exists():
            raise RenderError(f"fluidsynth failed: {proc.stderr.strip()[:300]}")
        audio, rate = sf.read(raw, dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE_HZ:
        raise RenderError(f"fluidsynth rendered at {rate} Hz")
    mono = audio.mean(axis=1)
    want = int((pm.get_end_time() + options.tail_s) * SAMPLE_RATE_HZ)
    if mono.size < want:
        mono = np.concatenate([mono, np.zeros(want - mono.size, dtype=np.float32)])
    mono = mono[:want]
    if options.noise_dbfs is not None:
        rng = np.random.default_rng(options.seed)
        mono = mono + rng.standard_normal(mono.size).astype(np.float32) * 10 ** (options.noise_dbfs / 20)
    tmp_out = out.with_suffix(".tmp.wav")
    sf.write(tmp_out, mono.astype(np.float32), SAMPLE_RATE_HZ, subtype="FLOAT")
    tmp_out.replace(out)
    return out


def load(path: Path) -> np.ndarray:
    audio, _ = sf.read(path, dtype="float32")
    return audio
