"""Named evaluation collections: a *tuning* set and a *held-out* set per capability.

The held-out sets differ from the tuning sets in soundfont (TimGM6mb vs FluidR3_GM and the csound
GM bank, alternating), in material family (generators and parameters), in level, and in seeds; both
carry a noise floor (tuning: varied per item, held-out: -72 dBFS). Kernels
and thresholds are tuned on ``tuning`` only; the acceptance numbers in the README are ``heldout``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import midi
from .render import RenderOptions, render

TUNING_SOUNDFONTS = ("FluidR3_GM.sf2", "sf_GMbank.sf2")  # fluid-soundfont-gm, csound-soundfont
TUNING_OPTIONS = RenderOptions(soundfont="FluidR3_GM.sf2", gain=0.5, noise_dbfs=-80.0)
HELDOUT_OPTIONS = RenderOptions(soundfont="TimGM6mb.sf2", gain=0.9, noise_dbfs=-72.0)


@dataclass(frozen=True)
class Item:
    piece: midi.Piece
    audio: Path


Maker = Callable[[np.random.Generator, int], midi.Piece]


def _onset_tuning(rng: np.random.Generator, i: int) -> midi.Piece:
    kinds = (
        midi.scale,
        midi.melody,
        midi.chords,
        lambda r: midi.accented_piece(r, float(r.uniform(50, 160))),
        midi.figuration,
    )
    return kinds[i % len(kinds)](rng)


def _onset_heldout(rng: np.random.Generator, i: int) -> midi.Piece:
    kinds = (
        midi.arpeggios,
        lambda r: midi.waltz(r, float(r.uniform(60, 180))),
        lambda r: midi.melody(r, lo=48, hi=90, n_notes=50, bpm=float(r.uniform(70, 170))),
    )
    return kinds[i % len(kinds)](rng)


def _pitch_tuning(rng: np.random.Generator, i: int) -> midi.Piece:
    lo = 36 + (i % 5) * 12
    return midi.scale(rng, lo=lo, hi=min(96, lo + 24)) if i % 2 else midi.melody(rng, lo=lo, hi=min(96, lo + 14), n_notes=24)


def _pitch_heldout(rng: np.random.Generator, i: int) -> midi.Piece:
    lo = 36 + (i % 6) * 10
    return midi.melody(rng, lo=lo, hi=min(96, lo + 12), n_notes=30, bpm=float(rng.uniform(50, 110)))


def tempo_bpms(n: int, rng: np.random.Generator) -> np.ndarray:
    """Tempi spread over 40-200 BPM with extra weight on 60-80, where trackers double."""
    base = np.geomspace(40, 200, n - n // 3)
    slow = np.linspace(60, 80, n // 3)
    out = np.concatenate([base, slow]) * rng.uniform(0.98, 1.02, n)
    return np.clip(out, 40, 200)


def _make_tempo(tuning: bool) -> Maker:
    def make(rng: np.random.Generator, i: int) -> midi.Piece:
        n = 24
        bpm = float(tempo_bpms(n, np.random.default_rng(7 if tuning else 77))[i % n])
        if tuning:
            return midi.accented_piece(rng, bpm, bars=8 if bpm > 70 else 5)
        return midi.waltz(rng, bpm, bars=10 if bpm > 70 else 7)
    return make


def _dyn_tuning(rng: np.random.Generator, i: int) -> midi.Piece:
    return midi.velocity_ramp(rng, chord=bool(i % 2))


def _dyn_heldout(rng: np.random.Generator, i: int) -> midi.Piece:
    return midi.velocity_ramp(rng, chord=bool(i % 2), n=30)


COLLECTIONS: dict[str, tuple[Maker, Maker]] = {
    # name: (tuning maker, held-out maker)
    "onsets": (_onset_tuning, _onset_heldout),
    "pitch": (_pitch_tuning, _pitch_heldout),
    "tempo": (_make_tempo(True), _make_tempo(False)),
    "dynamics": (_dyn_tuning, _dyn_heldout),
}
SEED_BASE = {"tuning": 1_000, "heldout": 9_000}


def collection(name: str, split: str, n: int) -> Iterator[Item]:
    """Yield ``n`` rendered items of collection ``name`` from ``split`` ('tuning' or 'heldout')."""
    tuning_maker, heldout_maker = COLLECTIONS[name]
    maker = tuning_maker if split == "tuning" else heldout_maker
    options = TUNING_OPTIONS if split == "tuning" else HELDOUT_OPTIONS
    for i in range(n):
        seed = SEED_BASE[split] + 100 * list(COLLECTIONS).index(name) + i
        rng = np.random.default_rng(seed)
        piece = maker(rng, i)
        if split == "tuning":
            # vary the instrument and the recording chain across the tuning items
            opts = RenderOptions(
                soundfont=TUNING_SOUNDFONTS[i % len(TUNING_SOUNDFONTS)],
                gain=float(rng.uniform(0.3, 1.0)),
                noise_dbfs=float(rng.choice([-85.0, -78.0, -70.0])),
                seed=seed,
            )
        else:
            opts = RenderOptions(**{**options.__dict__, "seed": seed})
        yield Item(piece, render(piece.midi, opts))
