"""Accuracy and speed of the streaming analysis core beside librosa, on the same renders.

    python bench/bench_core.py [--split heldout|tuning] [--out bench/results/core.json] [--quick]

Accuracy (held-out renders: TimGM6mb soundfont, material families never tuned on, -72 dBFS noise):
onsets (mir_eval F at +-50/25 ms; emission latency), monophonic pitch (raw pitch accuracy, 50 cents,
MIDI 36-96), tempo (share of steady pieces within 4 %), velocity (Spearman vs MIDI). Peers, on the
same audio in the same run: librosa ``onset.onset_detect``, ``yin``, ``pyin``, ``feature.tempo`` and
``beat.beat_track`` (offline, whole-file: they see the future, we do not).

Speed: our whole light pipeline per 20 ms chunk on one core (median/p95 microseconds, times real
time), librosa's offline onset+yin on the same audio, and start-up time with a warm numba cache.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core, for us and for the peers

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from edge_node.audio import CHUNK_SAMPLES, SAMPLE_RATE_HZ, iter_file_chunks  # noqa: E402
from edge_node.material import metrics, midi, render, sets  # noqa: E402
from edge_node.pipeline import StreamingPipeline  # noqa: E402

PEER_SR = 22_050  # librosa's own default analysis rate
SIZES = {"onsets": 24, "pitch": 12, "tempo": 24, "dynamics": 10}
QUICK_SIZES = {"onsets": 6, "pitch": 4, "tempo": 8, "dynamics": 4}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def peer_audio(item: sets.Item) -> np.ndarray:
    import librosa

    return librosa.resample(render.load(item.audio).astype(np.float32), orig_sr=SAMPLE_RATE_HZ, target_sr=PEER_SR)


def bench_onsets(items: list[sets.Item]) -> dict[str, Any]:
    import librosa
    import mir_eval

    ours: dict[str, list[float]] = {"f_50ms": [], "f_25ms": [], "latency_ms": []}
    peer: dict[str, list[float]] = {"f_50ms": [], "f_25ms": []}
    for i, item in enumerate(items):
        log(f"  onsets {i + 1}/{len(items)} {item.piece.name}")
        ref = midi.onsets_of(item.piece.midi)
        s = metrics.onset_scores(ref, metrics.run_pipeline(item.audio))
        ours["f_50ms"].append(s["f_50ms"])
        ours["f_25ms"].append(s["f_25ms"])
        ours["latency_ms"].extend(np.array(s["latencies_s"]) * 1000)
        est = librosa.onset.onset_detect(y=peer_audio(item), sr=PEER_SR, units="time")
        peer["f_50ms"].append(mir_eval.onset.f_measure(ref, est, window=0.05)[0])
        peer["f_25ms"].append(mir_eval.onset.f_measure(ref, est, window=0.025)[0])
    lat = np.array(ours["latency_ms"])
    return {
        "n_pieces": len(items),
        "seminote": {"f_50ms": float(np.mean(ours["f_50ms"])), "f_25ms": float(np.mean(ours["f_25ms"])),
                     "latency_median_ms": float(np.median(lat)), "latency_p95_ms": float(np.percentile(lat, 95))},
        "librosa.onset_detect": {k: float(np.mean(v)) for k, v in peer.items()},
    }


def bench_pitch(items: list[sets.Item], with_pyin: bool) -> dict[str, Any]:
    import librosa

    acc: dict[str, list[float]] = {"seminote": [], "librosa.yin": [], "librosa.pyin": []}
    frames: list[int] = []
    for i, item in enumerate(items):
        log(f"  pitch {i + 1}/{len(items)} {item.piece.name}")
        audio = render.load(item.audio)
        run = metrics.run_pipeline(item.audio)
        s = metrics.pitch_scores(item.piece.midi, run, audio)
        acc["seminote"].append(s["raw_pitch_accuracy"])
        frames.append(int(s["voiced_frames"]))
        grid = metrics.frame_grid(run.duration_s)
        y = peer_audio(item)
        hop = 256
        f_yin = librosa.yin(y, fmin=55.0, fmax=2200.0, sr=PEER_SR, frame_length=2048, hop_length=hop)
        acc["librosa.yin"].append(_peer_track(item, audio, grid, f_yin, hop))
        if with_pyin:
            f_pyin, _, _ = librosa.pyin(y, fmin=55.0, fmax=2200.0, sr=PEER_SR, frame_length=2048, hop_length=hop)
            acc["librosa.pyin"].append(_peer_track(item, audio, grid, np.nan_to_num(f_pyin), hop))
    out: dict[str, Any] = {"n_pieces": len(items), "voiced_frames": int(sum(frames))}
    for name, values in acc.items():
        if values:
            out[name] = {"raw_pitch_accuracy": float(np.average(values, weights=frames))}
    return out


def _peer_track(item: sets.Item, audio: np.ndarray, grid: np.ndarray, f0: np.ndarray, hop: int) -> float:
    times = np.arange(f0.size) * hop / PEER_SR  # librosa frames are centred
    idx = np.clip(np.searchsorted(times, grid), 0, f0.size - 1)
    return metrics.track_scores(item.piece.midi, audio, grid, f0[idx])["raw_pitch_accuracy"]


def bench_tempo(items: list[sets.Item]) -> dict[str, Any]:
    import librosa

    ok: dict[str, list[bool]] = {"seminote": [], "librosa.feature.tempo": [], "librosa.beat.beat_track": []}
    slow: dict[str, list[bool]] = {k: [] for k in ok}
    for i, item in enumerate(items):
        log(f"  tempo {i + 1}/{len(items)} {item.piece.name}")
        bpm = float(item.piece.bpm or 0.0)
        y = peer_audio(item)
        est = {
            "seminote": metrics.final_tempo(metrics.run_pipeline(item.audio)),
            "librosa.feature.tempo": float(librosa.feature.tempo(y=y, sr=PEER_SR)[0]),
            "librosa.beat.beat_track": float(np.atleast_1d(librosa.beat.beat_track(y=y, sr=PEER_SR)[0])[0]),
        }
        for name, value in est.items():
            good = abs(value - bpm) / bpm <= 0.04
            ok[name].append(good)
            if 60 <= bpm <= 80:
                slow[name].append(good)
    return {
        "n_pieces": len(items),
        **{name: {"within_4pct": float(np.mean(v)), "within_4pct_60_80bpm": float(np.mean(slow[name]))}
           for name, v in ok.items()},
    }


def bench_dynamics(items: list[sets.Item]) -> dict[str, Any]:
    from scipy.stats import spearmanr

    pairs: dict[str, tuple[list[int], list[int]]] = {"notes": ([], []), "chords": ([], [])}
    for item in items:
        ref, est = metrics.note_velocity_pairs(item.piece.midi, metrics.run_pipeline(item.audio))
        kind = "chords" if "chords" in item.piece.name else "notes"
        pairs[kind][0].extend(ref.tolist())
        pairs[kind][1].extend(est.tolist())
    return {kind: {"n": len(r), "spearman": float(spearmanr(r, e).statistic)} for kind, (r, e) in pairs.items()}


def bench_speed(item: sets.Item, repeats: int = 3) -> dict[str, Any]:
    import librosa

    chunks = [c.copy() for c in iter_file_chunks(item.audio) if c.size == CHUNK_SAMPLES]
    warm = StreamingPipeline()
    for c in chunks[:100]:
        warm.process(c)
    per_chunk: list[float] = []
    for _ in range(repeats):
        p = StreamingPipeline()
        for c in chunks:
            t0 = time.perf_counter_ns()
            p.process(c)
            per_chunk.append((time.perf_counter_ns() - t0) / 1000)
    us = np.array(per_chunk)
    audio_s = len(chunks) * CHUNK_SAMPLES / SAMPLE_RATE_HZ
    y = render.load(item.audio)
    # librosa jit-compiles some helpers on first use: warm it on one second before timing
    librosa.onset.onset_detect(y=y[:SAMPLE_RATE_HZ], sr=SAMPLE_RATE_HZ, units="time")
    librosa.yin(y[:SAMPLE_RATE_HZ], fmin=55.0, fmax=2200.0, sr=SAMPLE_RATE_HZ, frame_length=4096, hop_length=960)
    t_start = time.perf_counter()
    librosa.onset.onset_detect(y=y, sr=SAMPLE_RATE_HZ, units="time")
    librosa.yin(y, fmin=55.0, fmax=2200.0, sr=SAMPLE_RATE_HZ, frame_length=4096, hop_length=960)
    peer_s = time.perf_counter() - t_start
    chunk_ms = CHUNK_SAMPLES / SAMPLE_RATE_HZ * 1000
    return {
        "audio_s": audio_s,
        "seminote_light_per_chunk_us": {"median": float(np.median(us)), "p95": float(np.percentile(us, 95)),
                                        "mean": float(us.mean())},
        "seminote_times_real_time_median": float(chunk_ms * 1000 / np.median(us)),
        "seminote_times_real_time_mean": float(chunk_ms * 1000 / us.mean()),
        "librosa_onset_plus_yin_offline_s": peer_s,
        "librosa_times_real_time": audio_s / peer_s,
        "target_per_chunk_us": 67.0,
    }


def bench_startup(item: sets.Item) -> dict[str, float]:
    """Wall time of ``seminote-edge analyze`` on a 1 s file, cold numba cache excluded (run twice)."""
    import soundfile as sf

    short = Path(render.cache_dir()) / "startup-1s.wav"
    sf.write(short, render.load(item.audio)[:SAMPLE_RATE_HZ], SAMPLE_RATE_HZ)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "edge_node", "analyze", str(short)], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return {"first_s": times[0], "warm_median_s": float(np.median(times[1:])), "target_warm_s": 2.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=("heldout", "tuning"), default="heldout")
    ap.add_argument("--out", type=Path, default=Path("bench/results/core.json"))
    ap.add_argument("--quick", action="store_true", help="small subsets (a smoke run)")
    ap.add_argument("--no-pyin", action="store_true", help="skip librosa.pyin (slow)")
    args = ap.parse_args()
    sizes = QUICK_SIZES if args.quick else SIZES
    t0 = time.time()
    coll = {name: list(sets.collection(name, args.split, n)) for name, n in sizes.items()}
    log(f"rendered/loaded material in {time.time() - t0:.1f} s")
    result: dict[str, Any] = {
        "benchmark": "analysis core vs librosa",
        "split": args.split,
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                    "cores_used": 1},
    }
    steps = (
        ("speed", lambda: bench_speed(coll["onsets"][0])),
        ("startup", lambda: bench_startup(coll["onsets"][0])),
        ("onsets", lambda: bench_onsets(coll["onsets"])),
        ("pitch", lambda: bench_pitch(coll["pitch"], with_pyin=not args.no_pyin)),
        ("tempo", lambda: bench_tempo(coll["tempo"])),
        ("dynamics", lambda: bench_dynamics(coll["dynamics"])),
    )
    for name, step in steps:
        log(name)
        result[name] = step()
    result["elapsed_s"] = time.time() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
