"""Export a trained :class:`TranscriptionNet` to the ONNX graph contract of
``edge_node.inference.model`` (streaming form: features + caches in, probabilities + caches out)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import torch

from edge_node.inference.features import N_BINS

from .net import HarmonicNet, TranscriptionNet

OPSET = 17


def export(net: TranscriptionNet | HarmonicNet, path: Path, thresholds: dict[str, float], extra: dict[str, str] | None = None) -> None:
    """Write ``net`` to ``path`` with dynamic batch/time axes and the runtime's metadata."""
    net = net.eval()
    n_caches = len(net.cache_shapes(1))
    feats = torch.zeros(1, 2, N_BINS)
    caches = net.zero_caches(1)
    names_in = ["feats"] + [f"cache_{i}" for i in range(n_caches)]
    names_out = ["probs"] + [f"new_cache_{i}" for i in range(n_caches)]
    dynamic = {"feats": {0: "batch", 1: "time"}, "probs": {0: "batch", 1: "time"}}
    for i in range(n_caches):
        dynamic[f"cache_{i}"] = {0: "batch"}
        dynamic[f"new_cache_{i}"] = {0: "batch"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(net, (feats, *caches), str(path), input_names=names_in, output_names=names_out,
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
    model = onnx.load(str(path))
    meta = {
        "delay_frames": str(net.delay_frames),
        "cache_shapes": json.dumps([list(s[1:]) for s in net.cache_shapes(1)]),
        "thresholds": json.dumps(thresholds),
        **(extra or {}),
    }
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(model, str(path))
