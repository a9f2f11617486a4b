"""Detailed-mode transcription model: held-out accuracy, streaming note latency, speed, and the same
audio through basic-pitch's ONNX model, in one run.

Held-out set: ``edge_node.inference.evaluation.held_out_pieces`` (the shared material generators —
melodies, block chords, two-hand pieces, chord velocity ramps — rendered with TimGM6mb.sf2, fluidsynth
reverb and noise at -50 dBFS; neither that soundfont nor those generators train or tune the model).
Scores: mir_eval.transcription, onset tolerance 50 ms (onsets only; with offsets; with offsets and
velocity), mean over pieces. Latency: for each reference note matched (onset and pitch) by a model
note, the audio time at the end of the 20 ms chunk whose processing emitted the note's first event,
minus the true onset. Speed: the process pinned to one core, onnxruntime with one intra-op thread;
"× real time per stream" is audio seconds / wall seconds; batching compares 16 concurrent sessions
through one :class:`InferenceBatcher` with one session through it, on the same audio length.

    python bench/bench_model.py                 # → bench/results/model.json
    python bench/bench_model.py --pieces 4      # quicker

basic-pitch is a benchmark-only dependency: ``pip install --no-deps basic-pitch resampy`` (its declared
dependencies pull TensorFlow; onnxruntime, librosa and the rest are already here).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_node.audio import CHUNK_SAMPLES, SAMPLE_RATE_HZ  # noqa: E402
from edge_node.inference.batcher import InferenceBatcher  # noqa: E402
from edge_node.inference.evaluation import (  # noqa: E402
    HELD_OUT_NOISE_DBFS,
    HELD_OUT_SOUNDFONT,
    ONSET_TOLERANCE_S,
    EvalPiece,
    NoteTruth,
    Scores,
    held_out_pieces,
    mean_scores,
    score,
)
from edge_node.inference.features import N_BINS, FeatureStream  # noqa: E402
from edge_node.inference.model import DEFAULT_MODEL_PATH, ModelRunner  # noqa: E402
from edge_node.inference.transcriber import Transcriber  # noqa: E402
from edge_node.material.render import load  # noqa: E402

TARGETS = {
    "onset_f1": 0.95, "offset_f1": 0.80, "velocity_f1": 0.70,
    "latency_p95_ms": 150.0, "x_realtime_per_stream": 100.0, "batch16_cost_ratio": 4.0,
}
BATCH_SESSIONS = 16
BATCH_AUDIO_S = 10.0
RESULTS = ROOT / "bench" / "results" / "model.json"


def _hz(m: np.ndarray) -> np.ndarray:
    return np.asarray(440.0 * 2.0 ** ((np.asarray(m, dtype=np.float64) - 69.0) / 12.0))


def run_ours(runner: ModelRunner, pieces: list[EvalPiece]) -> dict[str, Any]:
    """Stream every piece in 20 ms chunks; score, time and measure note latency."""
    from mir_eval.transcription import match_notes

    scores: list[Scores] = []
    latencies: list[float] = []
    audio_s = wall_s = cpu_s = 0.0
    for piece in pieces:
        audio = load(piece.audio_path)
        tr = Transcriber(runner=runner)
        first_seen: dict[int, float] = {}
        last: dict[int, tuple[float, dict[str, Any]]] = {}
        w0, c0 = time.perf_counter(), time.thread_time()
        events: list[tuple[float, str, float, dict[str, Any]]] = []
        for start in range(0, audio.shape[0], CHUNK_SAMPLES):
            chunk = audio[start : start + CHUNK_SAMPLES]
            now = (start + chunk.shape[0]) / SAMPLE_RATE_HZ
            events += [(now, *e) for e in tr.feed(chunk, start)]
        end_now = audio.shape[0] / SAMPLE_RATE_HZ
        events += [(end_now, *e) for e in tr.finish()]
        wall_s += time.perf_counter() - w0
        cpu_s += time.thread_time() - c0
        audio_s += audio.shape[0] / SAMPLE_RATE_HZ
        for now, _, t, f in events:
            first_seen.setdefault(f["note_id"], now)
            last[f["note_id"]] = (t, f)
        ids = list(last)
        est = NoteTruth.of((last[i][0], last[i][1]["end"], last[i][1]["pitch"], last[i][1]["velocity"]) for i in ids)
        order = sorted(ids, key=lambda i: (last[i][0], last[i][1]["end"], last[i][1]["pitch"], last[i][1]["velocity"]))
        scores.append(score(piece.truth, est))
        if est.intervals.shape[0]:
            pairs = match_notes(piece.truth.intervals, _hz(piece.truth.pitches), est.intervals, _hz(est.pitches),
                                onset_tolerance=ONSET_TOLERANCE_S, offset_ratio=None)
            for ri, ei in pairs:
                latencies.append(first_seen[order[ei]] - float(piece.truth.intervals[ri, 0]))
    lat = np.array(latencies) * 1000.0
    return {
        "scores": mean_scores(scores).as_dict(),
        "per_piece": [{"piece": p.name, **s.as_dict()} for p, s in zip(pieces, scores, strict=True)],
        "latency_ms": {
            "p50": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
            "p95": round(float(np.percentile(lat, 95)), 1) if lat.size else None,
            "max": round(float(lat.max()), 1) if lat.size else None,
            "matched_notes": int(lat.size),
        },
        "speed": {
            "audio_s": round(audio_s, 1), "wall_s": round(wall_s, 3), "cpu_s": round(cpu_s, 3),
            "x_realtime_per_stream": round(audio_s / wall_s, 1),
        },
    }


def run_batching(runner: ModelRunner, audio: np.ndarray) -> dict[str, Any]:
    """Wall time for 1 and for 16 concurrent sessions on the same audio, through one batcher."""
    audio = audio[: int(BATCH_AUDIO_S * SAMPLE_RATE_HZ)]

    def sessions(n: int) -> float:
        # lockstep, as live sessions paced by real time: every session's chunk k arrives, the edge
        # answers all of them, then chunk k + 1 arrives (so each model call holds one frame per session)
        batcher = InferenceBatcher(runner).start()
        trs = [Transcriber(batcher=batcher, blocking=False) for _ in range(n)]
        t0 = time.perf_counter()
        for start in range(0, audio.shape[0], CHUNK_SAMPLES):
            chunk = audio[start : start + CHUNK_SAMPLES]
            for tr in trs:
                tr.feed(chunk, start)
            for tr in trs:
                tr.poll(wait=True)
        for tr in trs:
            tr.finish()
        dt = time.perf_counter() - t0
        batcher.close()
        return dt

    sessions(1)  # warm-up
    one = min(sessions(1) for _ in range(3))
    many = min(sessions(BATCH_SESSIONS) for _ in range(2))
    # the model alone: one call per 20 ms frame, batch 1 versus batch 16
    x1 = np.random.default_rng(0).normal(-6, 2, (1, 1, N_BINS)).astype(np.float32)
    per_call: dict[str, float] = {}
    for b in (1, BATCH_SESSIONS):
        caches = [np.repeat(c, b, 0) for c in runner.zero_caches()]
        xb = np.repeat(x1, b, 0)
        for _ in range(20):
            runner.run(xb, caches)
        t0 = time.perf_counter()
        for _ in range(300):
            _, caches = runner.run(xb, caches)
        per_call[f"batch{b}_us"] = round((time.perf_counter() - t0) / 300 * 1e6, 1)
    secs = audio.shape[0] / SAMPLE_RATE_HZ
    return {
        "audio_s_per_session": round(secs, 1),
        "wall_s_1_session": round(one, 3), f"wall_s_{BATCH_SESSIONS}_sessions": round(many, 3),
        "batch16_cost_ratio": round(many / one, 2),
        "x_realtime_per_stream_batched": round(BATCH_SESSIONS * secs / many, 1),
        "model_call": per_call,
        "features_us_per_frame": _features_cost(audio),
    }


def _features_cost(audio: np.ndarray) -> float:
    fs = FeatureStream()
    fs.push(audio[: CHUNK_SAMPLES * 4])
    t0 = time.perf_counter()
    n = 0
    for start in range(0, audio.shape[0], CHUNK_SAMPLES):
        n += fs.push(audio[start : start + CHUNK_SAMPLES]).shape[0]
    return round((time.perf_counter() - t0) / max(1, n) * 1e6, 1)


def run_basic_pitch(pieces: list[EvalPiece]) -> dict[str, Any]:
    """basic-pitch (ICASSP 2022, nmp.onnx) with its own pre/post-processing and default thresholds,
    onnxruntime pinned to one intra-op thread; offline over each whole file."""
    import logging

    logging.disable(logging.WARNING)
    import onnxruntime as ort
    from basic_pitch import ICASSP_2022_MODEL_PATH
    from basic_pitch.inference import Model, predict

    onnx_path = Path(ICASSP_2022_MODEL_PATH).with_suffix(".onnx")
    if not onnx_path.exists():
        onnx_path = Path(ICASSP_2022_MODEL_PATH).parent / "nmp.onnx"
    model = Model(onnx_path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    model.model = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    scores: list[Scores] = []
    audio_s = wall_s = 0.0
    devnull = open(os.devnull, "w")  # noqa: SIM115  (predict() prints a line per file)
    for piece in pieces:
        t0 = time.perf_counter()
        stdout, sys.stdout = sys.stdout, devnull
        try:
            _, _, note_events = predict(piece.audio_path, model)
        finally:
            sys.stdout = stdout
        wall_s += time.perf_counter() - t0
        audio_s += load(piece.audio_path).shape[0] / SAMPLE_RATE_HZ
        est = NoteTruth.of((float(s), float(e), int(p), int(np.clip(round(a * 127), 1, 127)))
                           for s, e, p, a, _ in note_events)
        scores.append(score(piece.truth, est))
    devnull.close()
    return {
        "model": str(onnx_path.name), "mode": "offline (whole file), its default thresholds",
        "scores": mean_scores(scores).as_dict(),
        "speed": {"audio_s": round(audio_s, 1), "wall_s": round(wall_s, 3),
                  "x_realtime_per_stream": round(audio_s / wall_s, 1)},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pieces", type=int, default=16)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--cpu", type=int, default=0, help="core to pin the benchmark to")
    ap.add_argument("--no-basic-pitch", action="store_true")
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    pieces = held_out_pieces(args.pieces)
    runner = ModelRunner(args.model)
    ours = run_ours(runner, pieces)
    print(json.dumps({"ours": {k: ours[k] for k in ("scores", "latency_ms", "speed")}}, indent=1), flush=True)
    batching = run_batching(runner, load(pieces[min(2, len(pieces) - 1)].audio_path))
    print(json.dumps({"batching": batching}, indent=1), flush=True)
    bp = None if args.no_basic_pitch else run_basic_pitch(pieces)
    if bp:
        print(json.dumps({"basic_pitch": bp}, indent=1), flush=True)
    measured = {
        "onset_f1": ours["scores"]["onset_f1"], "offset_f1": ours["scores"]["offset_f1"],
        "velocity_f1": ours["scores"]["velocity_f1"], "latency_p95_ms": ours["latency_ms"]["p95"],
        "x_realtime_per_stream": ours["speed"]["x_realtime_per_stream"],
        "batch16_cost_ratio": batching["batch16_cost_ratio"],
    }
    lower_is_better = {"latency_p95_ms", "batch16_cost_ratio"}
    verdict = {k: (measured[k] is not None and (measured[k] <= v if k in lower_is_better else measured[k] >= v))
               for k, v in TARGETS.items()}
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=False).stdout.strip()
    except OSError:
        commit = ""
    result = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": commit,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores_used": 1,
                    "python": platform.python_version()},
        "model": {"path": str(args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model),
                  "bytes": args.model.stat().st_size, "delay_frames": runner.info.delay_frames,
                  "thresholds": runner.info.thresholds},
        "held_out": {"pieces": len(pieces), "soundfont": HELD_OUT_SOUNDFONT, "reverb": True,
                     "noise_dbfs": HELD_OUT_NOISE_DBFS, "onset_tolerance_s": ONSET_TOLERANCE_S,
                     "audio_s": ours["speed"]["audio_s"]},
        "ours": ours, "batching": batching, "basic_pitch": bp,
        "targets": TARGETS, "measured": measured, "meets_target": verdict,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
