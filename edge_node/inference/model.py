"""The shipped ONNX transcription model: where it lives, what its inputs and outputs mean, and a
runner that executes it with pinned threads.

Graph contract (written by ``models/training/export.py``): input ``feats`` ``(B, T, N_BINS)`` float32
(see :mod:`.features`) and caches ``cache_0 .. cache_{k-1}``; outputs ``probs`` ``(B, T, N_HEADS,
N_KEYS)`` (sigmoid: onset, frame, offset, velocity/127) and ``new_cache_0 ..``. Output frame ``i``
describes feature frame ``i - delay_frames`` (the model's look-ahead); ``delay_frames`` and the cache
shapes (batch dimension first) are in the ONNX metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ModelLoadError

N_KEYS = 88
LOWEST_KEY_MIDI = 21
N_HEADS = 4
HEAD_ONSET, HEAD_FRAME, HEAD_OFFSET, HEAD_VELOCITY = range(N_HEADS)
DEFAULT_MODEL_PATH = Path(__file__).resolve().parents[2] / "models" / "transcriber.onnx"
INTRA_OP_THREADS = 1  # pinned: one core per inference worker, never the whole machine


@dataclass(frozen=True)
class ModelInfo:
    """What the runtime needs to know about a model, read from its ONNX metadata."""

    delay_frames: int
    cache_shapes: tuple[tuple[int, ...], ...]  # without the batch dimension
    thresholds: dict[str, float]


class ModelRunner:
    """One onnxruntime session over the transcription model (not thread-safe across callers: the
    :class:`~edge_node.inference.batcher.InferenceBatcher` worker is its only caller in a server)."""

    def __init__(self, path: Path | None = None, intra_op_threads: int = INTRA_OP_THREADS) -> None:
        import onnxruntime as ort

        self.path = Path(path) if path is not None else DEFAULT_MODEL_PATH
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors: translate here only
            raise ModelLoadError(str(self.path), str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
        meta = self._session.get_modelmeta().custom_metadata_map
        try:
            self.info = ModelInfo(
                delay_frames=int(meta["delay_frames"]),
                cache_shapes=tuple(tuple(s) for s in json.loads(meta["cache_shapes"])),
                thresholds={k: float(v) for k, v in json.loads(meta["thresholds"]).items()},
            )
        except (KeyError, ValueError) as exc:
            raise ModelLoadError(str(self.path), f"metadata missing or invalid ({exc})") from exc
        self._cache_names = [f"cache_{i}" for i in range(len(self.info.cache_shapes))]
        self._out_names = ["probs"] + [f"new_cache_{i}" for i in range(len(self.info.cache_shapes))]

    def zero_caches(self) -> list[np.ndarray]:
        """Caches of a stream that has heard nothing yet (batch dimension 1)."""
        return [np.zeros((1, *s), dtype=np.float32) for s in self.info.cache_shapes]

    def run(self, feats: np.ndarray, caches: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Run on ``feats`` ``(B, T, N_BINS)`` with caches batched on axis 0; returns probs and caches."""
        inputs = {"feats": np.ascontiguousarray(feats, dtype=np.float32)}
        inputs.update(zip(self._cache_names, caches, strict=True))
        out = self._session.run(self._out_names, inputs)
        return out[0], list(out[1:])
