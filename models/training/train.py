"""Train the detailed-mode transcription model end to end and ship it as ``models/transcriber.onnx``.

    nice -n 10 python -m models.training.train            # data → training → tuning → ONNX export

Steps: (1) render the training and tuning sets (``data.make_example``; cached as .npz under
``--data-dir``, default ``~/.cache/seminote/train``); (2) train :class:`TranscriptionNet` on random
crops with BCE on onset/frame/offset and a masked MSE on velocity, for ``--steps`` (or until
``--max-minutes``), keeping the checkpoint with the best tuning-set note F1; (3) choose the decoder
thresholds on the tuning set (training soundfonts and material, never the held-out set); (4) export
to ONNX with the thresholds in its metadata; write ``models/training/last_run.json``. Needs torch
(``pip install torch==2.13.0``, CPU build) and onnx; neither is a runtime dependency of the edge.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812

from edge_node.inference.decode import decode_offline
from edge_node.inference.evaluation import NoteTruth, Scores, mean_scores, score
from edge_node.inference.model import DEFAULT_MODEL_PATH, HEAD_FRAME, HEAD_OFFSET, HEAD_ONSET, HEAD_VELOCITY

from .data import make_example
from .export import export
from .net import HarmonicNet, TranscriptionNet

TRAIN_SEED_BASE = 0
TUNE_SEED_BASE = 1_000_000  # tuning pieces: same soundfonts and generators, disjoint seeds
CROP_FRAMES = 256
WARMUP_FRAMES = 40  # >= the receptive field: outputs before this lack real context in a crop
ONSET_POS_WEIGHT = 4.0  # onsets are one frame per note: weight them up so the head learns them early
OFFSET_POS_WEIGHT = 2.0
OFFSET_LOSS_WEIGHT = 0.5
VELOCITY_LOSS_WEIGHT = 1.0
RUN_REPORT = Path(__file__).with_name("last_run.json")


def _example_path(data_dir: Path, split: str, seed: int) -> Path:
    return data_dir / split / f"{seed}.npz"


def _make_one(args: tuple[str, str, int, float]) -> str:
    data_dir, split, seed, seconds = args
    path = _example_path(Path(data_dir), split, seed)
    if not path.exists():
        feats, roll, truth = make_example(seed, seconds)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, feats=feats, roll=roll, intervals=truth.intervals, pitches=truth.pitches,
                 velocities=truth.velocities)
        os.replace(tmp, path)
    return str(path)


def build_set(data_dir: Path, split: str, seed_base: int, n: int, seconds: float, workers: int) -> list[Path]:
    """Render (or reuse) ``n`` examples of ``split``."""
    (data_dir / split).mkdir(parents=True, exist_ok=True)
    jobs = [(str(data_dir), split, seed_base + i, seconds) for i in range(n)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return [Path(p) for p in pool.map(_make_one, jobs, chunksize=4)]


class Examples:
    """All examples of a split in memory (features float16, targets uint8)."""

    def __init__(self, paths: list[Path]) -> None:
        self.feats: list[np.ndarray] = []
        self.rolls: list[np.ndarray] = []
        self.truths: list[NoteTruth] = []
        for p in paths:
            z = np.load(p)
            self.feats.append(z["feats"])
            self.rolls.append(z["roll"])
            self.truths.append(NoteTruth(z["intervals"], z["pitches"], z["velocities"]))

    def batch(self, rng: np.random.Generator, size: int, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for _ in range(size):
            i = int(rng.integers(0, len(self.feats)))
            f, r = self.feats[i], self.rolls[i]
            start = int(rng.integers(0, max(1, f.shape[0] - frames)))
            fx = f[start : start + frames].astype(np.float32)
            ry = r[start : start + frames].astype(np.float32) / 127.0
            if fx.shape[0] < frames:
                pad = frames - fx.shape[0]
                fx = np.concatenate([fx, np.full((pad, fx.shape[1]), fx.min(), np.float32)])
                ry = np.concatenate([ry, np.zeros((pad, *ry.shape[1:]), np.float32)])
            xs.append(fx)
            ys.append(ry)
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def loss_fn(net: TranscriptionNet | HarmonicNet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Losses on outputs past the warm-up, aligned to targets by the model's delay."""
    logits, _ = net.forward_logits(x, net.zero_caches(x.shape[0]))
    d = net.delay_frames
    out = logits[:, WARMUP_FRAMES + d :]
    tgt = y[:, WARMUP_FRAMES : y.shape[1] - d]
    bce = F.binary_cross_entropy_with_logits
    on_w = torch.tensor(ONSET_POS_WEIGHT)
    off_w = torch.tensor(OFFSET_POS_WEIGHT)
    loss = bce(out[:, :, HEAD_ONSET], tgt[:, :, HEAD_ONSET], pos_weight=on_w)
    loss = loss + bce(out[:, :, HEAD_FRAME], tgt[:, :, HEAD_FRAME])
    loss = loss + OFFSET_LOSS_WEIGHT * bce(out[:, :, HEAD_OFFSET], tgt[:, :, HEAD_OFFSET], pos_weight=off_w)
    # velocity: taught on the onset frame and its neighbours (the decoder reads it on the rising edge)
    vel = F.max_pool1d(y[:, :, HEAD_VELOCITY].transpose(1, 2), 3, 1, 1).transpose(1, 2)
    vel = vel[:, WARMUP_FRAMES : y.shape[1] - d]
    mask = (vel > 0).float()
    pred = torch.sigmoid(out[:, :, HEAD_VELOCITY])
    loss = loss + VELOCITY_LOSS_WEIGHT * ((pred - vel) ** 2 * mask).sum() / mask.sum().clamp(min=1.0)
    return loss


@torch.no_grad()
def predict(net: TranscriptionNet | HarmonicNet, feats: np.ndarray) -> np.ndarray:
    """Label-aligned probabilities ``(T, N_HEADS, N_KEYS)`` of a whole example (streaming-equivalent)."""
    net.eval()
    d = net.delay_frames
    x = torch.from_numpy(feats.astype(np.float32))[None]
    x = torch.cat([x, x[:, -1:].expand(1, d, x.shape[2])], dim=1)  # flush the look-ahead
    probs = net(x, *net.zero_caches(1))[0][0].numpy()
    return probs[d:]


def evaluate(probs: list[np.ndarray], truths: list[NoteTruth], onset_thr: float, frame_thr: float) -> Scores:
    results = []
    for p, truth in zip(probs, truths, strict=True):
        notes = decode_offline(p, onset_thr, frame_thr)
        est = NoteTruth.of((n.onset_s, n.end_s or n.onset_s, n.pitch, n.velocity) for n in notes)
        results.append(score(truth, est))
    return mean_scores(results)


def _objective(s: Scores) -> float:
    return s.onset_f1 + s.offset_f1 + s.velocity_f1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=Path.home() / ".cache" / "seminote" / "train")
    ap.add_argument("--n-train", type=int, default=240)
    ap.add_argument("--n-tune", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each generated piece")
    ap.add_argument("--steps", type=int, default=12_000)
    ap.add_argument("--max-minutes", type=float, default=30.0, help="stop training after this wall time")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="rendering processes")
    ap.add_argument("--eval-every", type=int, default=150)
    ap.add_argument("--eval-pieces", type=int, default=6, help="tuning pieces scored during training")
    ap.add_argument("--checkpoint", type=Path, default=Path.home() / ".cache" / "seminote" / "transcriber.pt",
                    help="latest weights, saved at every evaluation (resume with --init)")
    ap.add_argument("--init", type=Path, default=None, help="start from these weights")
    ap.add_argument("--tune-only", action="store_true", help="skip training: tune and export --init")
    ap.add_argument("--out", type=Path, default=DEFAULT_MODEL_PATH)
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument("--arch", choices=("harmonic", "dense"), default="harmonic",
                    help="harmonic: pitch-equivariant HarmonicNet (shipped); dense: TranscriptionNet")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()

    print(f"[data] rendering {args.n_train} training + {args.n_tune} tuning pieces into {args.data_dir}", flush=True)
    train = Examples(build_set(args.data_dir, "train", TRAIN_SEED_BASE, args.n_train, args.seconds, args.workers))
    tune = Examples(build_set(args.data_dir, "tune", TUNE_SEED_BASE, args.n_tune, args.seconds, args.workers))
    frames = sum(f.shape[0] for f in train.feats)
    print(f"[data] {frames} training frames ({frames * 0.02 / 3600:.2f} h) in {time.time() - t0:.0f}s", flush=True)
    all_feats = np.concatenate([f[::7].astype(np.float32) for f in train.feats])
    arch = HarmonicNet if args.arch == "harmonic" else TranscriptionNet
    net = arch(feat_mean=float(all_feats.mean()), feat_std=float(all_feats.std()))
    if args.init is not None:
        net.load_state_dict(torch.load(args.init))
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    best: tuple[float, dict[str, torch.Tensor], int] = (-1.0, {k: v.clone() for k, v in net.state_dict().items()}, 0)
    history: list[dict[str, float]] = []
    t_train = time.time()
    step = 0
    running = 0.0
    for step in range(1, 0 if args.tune_only else args.steps + 1):
        frac = min(1.0, max(step / args.steps, (time.time() - t_train) / (args.max_minutes * 60)))
        for g in opt.param_groups:
            g["lr"] = args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac))) * min(1.0, step / 100)
        net.train()
        x, y = train.batch(rng, args.batch, CROP_FRAMES)
        loss = loss_fn(net, x, y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        running = 0.98 * running + 0.02 * loss.item() if step > 1 else loss.item()
        done = frac >= 1.0
        if step % args.eval_every == 0 or done:
            k = args.eval_pieces
            probs = [predict(net, f) for f in tune.feats[:k]]
            s = evaluate(probs, tune.truths[:k], 0.5, 0.5)
            torch.save(net.state_dict(), args.checkpoint)
            history.append({"step": step, "minutes": round((time.time() - t_train) / 60, 1),
                            "loss": round(running, 4), **s.as_dict()})
            print(f"[train] step {step} loss {running:.4f} tune {s.as_dict()} "
                  f"({(time.time() - t_train) / 60:.1f} min)", flush=True)
            if _objective(s) >= best[0]:
                best = (_objective(s), {k: v.clone() for k, v in net.state_dict().items()}, step)
        if done:
            break
    if not args.tune_only:
        net.load_state_dict(best[1])
    print(f"[tune] best checkpoint at step {best[2]}", flush=True)
    probs = [predict(net, f) for f in tune.feats]
    grid = [(o, f) for o in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7) for f in (0.2, 0.3, 0.4, 0.5, 0.6)]
    tuned = max(grid, key=lambda of: _objective(evaluate(probs, tune.truths, *of)))
    tuned_scores = evaluate(probs, tune.truths, *tuned)
    print(f"[tune] thresholds onset {tuned[0]} frame {tuned[1]}: {tuned_scores.as_dict()}", flush=True)
    thresholds = {"onset": tuned[0], "frame": tuned[1]}
    export(net, args.out, thresholds, extra={"trained_steps": str(step), "best_step": str(best[2])})
    report = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "train_frames": frames, "params": sum(p.numel() for p in net.parameters()),
        "best_step": best[2], "steps_run": step, "thresholds": thresholds,
        "tune_scores": tuned_scores.as_dict(), "history": history,
        "wall_minutes": round((time.time() - t0) / 60, 1), "onnx_bytes": args.out.stat().st_size,
    }
    RUN_REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"[export] {args.out} ({args.out.stat().st_size} bytes); report {RUN_REPORT}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
