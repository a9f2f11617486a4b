"""Training data: generated piano MIDI rendered with several soundfonts, augmented, turned into
(features, piano-roll targets) pairs at the model's 20 ms frame rate.

The material family here (arpeggios, Alberti bass under a melody, random voicings, dense random
polyphony, scales in thirds and sixths, repeated notes, sustain pedal) is this module's own; the
held-out evaluation set uses ``edge_node.material.midi`` generators and ``TimGM6mb.sf2``, neither of
which appears here (``TRAIN_SOUNDFONTS`` must never list it).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pretty_midi
import soundfile as sf
from scipy import signal

from edge_node.inference.evaluation import HELD_OUT_SOUNDFONT, NoteTruth, sounding_notes
from edge_node.inference.features import HOP_S, SAMPLE_RATE_HZ, features_of
from edge_node.inference.model import LOWEST_KEY_MIDI, N_KEYS

TRAIN_SOUNDFONTS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",          # fluid-soundfont-gm
    "/usr/share/sounds/sf3/MuseScore_General_Lite.sf3",  # musescore-general-soundfont-small
    "/usr/share/sounds/sf2/sf_GMbank.sf2",            # csound-soundfont
    "/usr/share/sounds/sf3/FluidR3Mono_GM.sf3",       # fluidr3mono-gm-soundfont
)
PIANO_PROGRAMS = (0, 0, 0, 1, 2)  # acoustic grand most often; bright and electric grand for timbre
SUSTAIN_CC = 64
PIECE_START_S = 0.2
TAIL_S = 1.0


# ----------------------------------------------------------------------------- MIDI generators
def _scale_pool(rng: np.random.Generator, lo: int, hi: int) -> list[int]:
    tonic = int(rng.integers(0, 12))
    mode = [(0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10), (0, 2, 3, 5, 7, 8, 11)][int(rng.integers(0, 3))]
    return [p for p in range(lo, hi + 1) if (p - tonic) % 12 in mode]


def _vel(rng: np.random.Generator, centre: float, spread: float = 12.0) -> int:
    return int(np.clip(rng.normal(centre, spread), 8, 127))


def _pedal(rng: np.random.Generator, inst: pretty_midi.Instrument, end_s: float, period_s: float) -> None:
    """Sustain pedal pressed and released in phrase-length blocks (changed just after the beat)."""
    t = PIECE_START_S + float(rng.uniform(0.0, period_s))
    while t < end_s:
        down = t + 0.05
        up = min(end_s, down + period_s * float(rng.uniform(0.7, 2.0)) - 0.05)
        inst.control_changes.append(pretty_midi.ControlChange(SUSTAIN_CC, 100, down))
        inst.control_changes.append(pretty_midi.ControlChange(SUSTAIN_CC, 0, up))
        t = up + float(rng.uniform(0.0, 0.3))


def arpeggios(rng: np.random.Generator, seconds: float) -> list[pretty_midi.Note]:
    """Broken chords up and down, in one or two hands, at varied speeds."""
    notes: list[pretty_midi.Note] = []
    t = PIECE_START_S
    step = float(rng.uniform(0.07, 0.35))
    while t < seconds:
        root = int(rng.integers(28, 80))
        shape = [(0, 4, 7, 12), (0, 3, 7, 12), (0, 4, 7, 10), (0, 3, 6, 9), (0, 5, 9, 12)][int(rng.integers(0, 5))]
        octaves = int(rng.integers(1, 3))
        seq = [root + s + 12 * o for o in range(octaves) for s in shape if root + s + 12 * o <= 105]
        if rng.random() < 0.5:
            seq = seq + seq[-2:0:-1]
        centre = float(rng.uniform(30, 110))
        hold = float(rng.uniform(0.5, 1.0))
        for p in seq:
            notes.append(pretty_midi.Note(_vel(rng, centre), p, t, t + step * hold * float(rng.uniform(1, 3))))
            t += step
    return notes


def alberti(rng: np.random.Generator, seconds: float) -> list[pretty_midi.Note]:
    """Alberti or waltz bass under a stepwise melody with varied rhythms (two voices or more)."""
    notes: list[pretty_midi.Note] = []
    beat = 60.0 / float(rng.uniform(50, 170))
    pool = _scale_pool(rng, 55, 96)
    idx = len(pool) // 2
    t = PIECE_START_S
    loud = float(rng.uniform(35, 110))
    while t < seconds:
        root = int(rng.integers(33, 55))
        pattern = [0, 7, 4, 7] if rng.random() < 0.6 else [0, 4, 7, 4]
        for k, off in enumerate(pattern):
            s = t + k * beat / 2
            notes.append(pretty_midi.Note(_vel(rng, loud - 15, 8), root + off, s, s + beat / 2 * 0.9))
        m = t
        while m < t + 2 * beat - 1e-6:
            dur = beat * float(rng.choice([0.25, 0.5, 0.5, 1.0, 1.5, 2.0]))
            dur = min(dur, t + 2 * beat - m)
            idx = int(np.clip(idx + int(rng.choice([-3, -2, -1, -1, 1, 1, 2, 3, 0])), 0, len(pool) - 1))
            if rng.random() > 0.08:
                notes.append(pretty_midi.Note(_vel(rng, loud, 10), pool[idx], m, m + dur * float(rng.uniform(0.6, 1.0))))
            if rng.random() < 0.25:  # a harmony note under the melody
                lower = max(0, idx - 2)
                notes.append(pretty_midi.Note(_vel(rng, loud - 10, 8), pool[lower], m, m + dur * 0.9))
            m += dur
        t += 2 * beat
    return notes


def voicings(rng: np.random.Generator, seconds: float) -> list[pretty_midi.Note]:
    """Block chords of 2-7 notes, open and close voicings spread over the keyboard, varied durations,
    some rolled, some with voices released at different times."""
    notes: list[pretty_midi.Note] = []
    t = PIECE_START_S
    while t < seconds:
        n = int(rng.integers(2, 8))
        centre = int(rng.integers(36, 84))
        spread = int(rng.integers(5, 30))
        ps = sorted({int(np.clip(centre + rng.integers(-spread, spread + 1), 21, 108)) for _ in range(n)})
        dur = float(rng.uniform(0.15, 2.5))
        v = float(rng.uniform(20, 120))
        roll = float(rng.uniform(0.01, 0.04)) if rng.random() < 0.2 else 0.0
        for i, p in enumerate(ps):
            s = t + i * roll
            notes.append(pretty_midi.Note(_vel(rng, v, 10), p, s, s + dur * float(rng.uniform(0.5, 1.0))))
        t += dur + float(rng.uniform(-0.1, 0.4)) if rng.random() < 0.7 else dur * float(rng.uniform(0.3, 0.9))
    return notes


def polyphony(rng: np.random.Generator, seconds: float) -> list[pretty_midi.Note]:
    """Dense independent random notes (1-8 sounding), uniform over the keyboard and velocities."""
    notes: list[pretty_midi.Note] = []
    rate = float(rng.uniform(2, 14))  # onsets per second
    t = PIECE_START_S
    while t < seconds:
        p = int(rng.integers(21, 109))
        d = float(np.exp(rng.uniform(np.log(0.05), np.log(3.0))))
        notes.append(pretty_midi.Note(int(rng.integers(10, 128)), p, t, t + d))
        t += float(rng.exponential(1.0 / rate))
    return notes


def double_scales(rng: np.random.Generator, seconds: float) -> list[pretty_midi.Note]:
    """Scales in thirds, sixths or octaves, and repeated notes, at varied tempi and articulations."""
    notes: list[pretty_midi.Note] = []
    t = PIECE_START_S
    while t < seconds:
        pool = _scale_pool(rng, 24, 106)
        step = float(rng.uniform(0.08, 0.5))
        legato = float(rng.uniform(0.3, 1.1))
        start = int(rng.integers(0, max(1, len(pool) - 16)))
        run = pool[start : start + int(rng.integers(6, 16))]
        if rng.random() < 0.5:
            run = run[::-1]
        interval = int(rng.choice([0, 2, 5, 7]))  # scale steps: unison (single line), third, sixth, octave
        v = float(rng.uniform(20, 120))
        repeat = int(rng.choice([1, 1, 1, 2, 3]))
        for i, p in enumerate(run):
            for _ in range(repeat):
                notes.append(pretty_midi.Note(_vel(rng, v, 8), p, t, t + step * legato))
                j = start + i + interval if interval else -1
                if 0 <= j < len(pool) and interval:
                    notes.append(pretty_midi.Note(_vel(rng, v, 8), pool[j], t, t + step * legato))
                t += step
        t += float(rng.uniform(0.0, 0.6))
    return notes


GENERATORS = {
    "arpeggios": arpeggios,
    "alberti": alberti,
    "voicings": voicings,
    "polyphony": polyphony,
    "double_scales": double_scales,
}


def make_piece(rng: np.random.Generator, seconds: float) -> pretty_midi.PrettyMIDI:
    """One training piece: a random generator, piano program, optional sustain pedal."""
    name = list(GENERATORS)[int(rng.integers(0, len(GENERATORS)))]
    pm = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    inst = pretty_midi.Instrument(program=int(rng.choice(PIANO_PROGRAMS)), name=name)
    raw = GENERATORS[name](rng, seconds)
    inst.notes = [n for n in raw if 21 <= n.pitch <= 108 and n.end - n.start >= 0.03]
    if rng.random() < 0.35:
        _pedal(rng, inst, seconds, period_s=float(rng.uniform(1.0, 4.0)))
    pm.instruments.append(inst)
    return pm


# ----------------------------------------------------------------------------- targets
def piano_roll(truth: NoteTruth, n_frames: int) -> np.ndarray:
    """``(n_frames, 4, N_KEYS)`` float32 targets: onset, frame (sounding), offset, velocity (0-1).

    Frame ``j`` is the 20 ms span ``[j * HOP_S, (j + 1) * HOP_S)``; a note's onset and offset mark the
    frame that contains them; velocity is set on the onset frame only.
    """
    roll = np.zeros((n_frames, 4, N_KEYS), dtype=np.float32)
    for (s, e), p, v in zip(truth.intervals, truth.pitches, truth.velocities, strict=True):
        k = int(p) - LOWEST_KEY_MIDI
        if not 0 <= k < N_KEYS:
            continue
        a = int(s / HOP_S)
        b = max(a + 1, int(np.ceil(e / HOP_S)))
        if a >= n_frames:
            continue
        roll[a:min(b, n_frames), 1, k] = 1.0
        roll[a, 0, k] = 1.0
        roll[a, 3, k] = v / 127.0
        off = min(int(e / HOP_S), n_frames - 1)
        roll[off, 2, k] = 1.0
    return roll


# ----------------------------------------------------------------------------- audio
def render_audio(pm: pretty_midi.PrettyMIDI, soundfont: str, gain: float, reverb: bool) -> np.ndarray:
    """fluidsynth render to mono float32 at 48 kHz (into a temp dir: nothing cached)."""
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise RuntimeError("fluidsynth is not installed (apt-get install fluidsynth)")
    with tempfile.TemporaryDirectory() as tmp:
        mid = Path(tmp) / "in.mid"
        pm.write(str(mid))
        out = Path(tmp) / "out.wav"
        cmd = [exe, "-ni", "-q", "-F", str(out), "-T", "wav", "-O", "float", "-r", str(SAMPLE_RATE_HZ),
               "-g", f"{gain:.3f}", "-R", "1" if reverb else "0", "-C", "0", soundfont, str(mid)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"fluidsynth failed: {proc.stderr.strip()[:300]}")
        audio, _ = sf.read(out, dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    want = int((pm.get_end_time() + TAIL_S) * SAMPLE_RATE_HZ)
    if mono.size < want:
        mono = np.concatenate([mono, np.zeros(want - mono.size, dtype=np.float32)])
    return mono[:want].astype(np.float32)


def _room_ir(rng: np.random.Generator, rt60_s: float) -> np.ndarray:
    """A synthetic room impulse response: exponentially decaying noise after a direct path."""
    n = int(rt60_s * SAMPLE_RATE_HZ)
    t = np.arange(n) / SAMPLE_RATE_HZ
    tail = rng.standard_normal(n) * np.exp(-6.91 * t / rt60_s)
    tail = signal.lfilter([1.0], [1.0, -float(rng.uniform(0.0, 0.7))], tail)  # darker tails
    ir = np.zeros(n)
    ir[0] = 1.0
    pre = int(rng.uniform(0.005, 0.03) * SAMPLE_RATE_HZ)
    ir[pre:] += tail[: n - pre] / np.sqrt(np.sum(tail**2)) * float(rng.uniform(0.3, 1.5))
    return ir


def augment(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Room reverb, EQ, phone-like band limits, gain, noise and occasional clipping, each at random."""
    x = audio.astype(np.float64)
    if rng.random() < 0.5:
        x = signal.fftconvolve(x, _room_ir(rng, float(rng.uniform(0.2, 1.6))))[: x.size]
    if rng.random() < 0.5:  # broad EQ: a random peaking/shelving tilt
        f0 = float(np.exp(rng.uniform(np.log(100), np.log(8000))))
        gain_db = float(rng.uniform(-12, 12))
        b, a = _peaking(f0, gain_db, q=float(rng.uniform(0.4, 2.0)))
        x = signal.lfilter(b, a, x)
    if rng.random() < 0.25:  # phone / laptop microphone band
        lo = float(rng.uniform(100, 400))
        hi = float(rng.uniform(3400, 8000))
        sos = signal.butter(4, [lo, hi], btype="bandpass", fs=SAMPLE_RATE_HZ, output="sos")
        x = signal.sosfilt(sos, x)
    peak = float(np.max(np.abs(x))) or 1.0
    x = x / peak * float(10 ** (rng.uniform(-35, 0) / 20))
    if rng.random() < 0.7:
        noise = rng.standard_normal(x.size)
        if rng.random() < 0.5:  # pinkish
            noise = signal.lfilter([1.0], [1.0, -0.95], noise) * 0.3
        x = x + noise * float(10 ** (rng.uniform(-85, -40) / 20))
    if rng.random() < 0.05:
        x = np.clip(x * float(rng.uniform(1.5, 4.0)), -1.0, 1.0)
    return x.astype(np.float32)


def _peaking(f0: float, gain_db: float, q: float) -> tuple[np.ndarray, np.ndarray]:
    """RBJ peaking-EQ biquad."""
    a_lin = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * min(f0, SAMPLE_RATE_HZ * 0.45) / SAMPLE_RATE_HZ
    alpha = np.sin(w0) / (2 * q)
    b = np.array([1 + alpha * a_lin, -2 * np.cos(w0), 1 - alpha * a_lin])
    a = np.array([1 + alpha / a_lin, -2 * np.cos(w0), 1 - alpha / a_lin])
    return b / a[0], a / a[0]


def make_example(seed: int, seconds: float, soundfonts: tuple[str, ...] = TRAIN_SOUNDFONTS,
                 augmented: bool = True) -> tuple[np.ndarray, np.ndarray, NoteTruth]:
    """One example: features ``(T, N_BINS)`` float16, targets ``(T, 4, N_KEYS)`` as uint8 (x127), truth."""
    assert not any(HELD_OUT_SOUNDFONT in s for s in soundfonts), "the held-out soundfont is never trained on"
    rng = np.random.default_rng(seed)
    pm = make_piece(rng, seconds)
    soundfont = soundfonts[int(rng.integers(0, len(soundfonts)))]
    audio = render_audio(pm, soundfont, gain=float(rng.uniform(0.3, 1.0)), reverb=bool(rng.random() < 0.3))
    if augmented:
        audio = augment(audio, rng)
    feats = features_of(audio)
    truth = sounding_notes(pm)
    roll = piano_roll(truth, feats.shape[0])
    return feats.astype(np.float16), np.round(roll * 127).astype(np.uint8), truth
