"""The transcription network (PyTorch): a causal conv front end over log-frequency frames, a causal
dilated temporal stack, and four per-key heads (onset, frame, offset, velocity).

Every time convolution is *causal* and carries an explicit cache of its last input frames, so the
same module runs offline (zero caches, whole sequence) and in streaming (caches in, caches out, a
few frames per call) with identical results. Look-ahead comes only from ``delay_frames``: output
frame ``i`` describes input frame ``i - delay_frames``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from edge_node.inference.features import N_BINS
from edge_node.inference.model import N_HEADS, N_KEYS


class CausalConv2d(nn.Module):
    """Conv over (time, freq), causal in time: needs ``kt - 1`` past frames (its cache)."""

    def __init__(self, c_in: int, c_out: int, kt: int, kf: int) -> None:
        super().__init__()
        self.kt = kt
        self.conv = nn.Conv2d(c_in, c_out, (kt, kf), padding=(0, kf // 2))

    def forward(self, x: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x: (B, C, T, F); cache: (B, C, kt-1, F)
        full = torch.cat([cache, x], dim=2)
        return self.conv(full), full[:, :, full.shape[2] - (self.kt - 1) :]


class CausalBlock(nn.Module):
    """Residual dilated causal Conv1d over time on the hidden features."""

    def __init__(self, hidden: int, dilation: int, kernel: int = 3) -> None:
        super().__init__()
        self.span = (kernel - 1) * dilation
        self.conv = nn.Conv1d(hidden, hidden, kernel, dilation=dilation)
        self.mix = nn.Conv1d(hidden, hidden, 1)

    def forward(self, x: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x: (B, H, T); cache: (B, H, span)
        full = torch.cat([cache, x], dim=2)
        y = self.mix(F.relu(self.conv(full)))
        return x + y, full[:, :, full.shape[2] - self.span :]


class TranscriptionNet(nn.Module):
    """Features ``(B, T, N_BINS)`` + caches → per-key probabilities ``(B, T, N_HEADS, N_KEYS)`` + caches."""

    def __init__(self, c1: int = 12, c2: int = 24, hidden: int = 192,
                 dilations: tuple[int, ...] = (1, 2, 4, 8), delay_frames: int = 4,
                 feat_mean: float = -6.0, feat_std: float = 2.0) -> None:
        super().__init__()
        self.delay_frames = delay_frames
        self.register_buffer("feat_mean", torch.tensor(feat_mean))
        self.register_buffer("feat_std", torch.tensor(feat_std))
        self.conv1 = CausalConv2d(1, c1, 3, 7)
        self.conv2 = CausalConv2d(c1, c1, 3, 3)
        self.conv3 = CausalConv2d(c1, c2, 3, 3)
        self.proj = nn.Linear(c2 * (N_BINS // 4), hidden)
        self.blocks = nn.ModuleList([CausalBlock(hidden, d) for d in dilations])
        self.head = nn.Linear(hidden, N_HEADS * N_KEYS)
        self.dropout = nn.Dropout(0.1)

    def cache_shapes(self, batch: int) -> list[tuple[int, ...]]:
        """Shapes of the caches, in the order ``forward`` takes and returns them."""
        shapes: list[tuple[int, ...]] = [
            (batch, 1, 2, N_BINS), (batch, self.conv1.conv.out_channels, 2, N_BINS),
            (batch, self.conv2.conv.out_channels, 2, N_BINS // 2),
        ]
        shapes += [(batch, self.proj.out_features, b.span) for b in self.blocks]
        return shapes

    def zero_caches(self, batch: int) -> list[torch.Tensor]:
        return [torch.zeros(s) for s in self.cache_shapes(batch)]

    def forward_logits(self, feats: torch.Tensor, caches: list[torch.Tensor]
                       ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, t, _ = feats.shape
        x = ((feats - self.feat_mean) / self.feat_std).unsqueeze(1)  # (B, 1, T, F)
        new: list[torch.Tensor] = []
        x, c = self.conv1(x, caches[0])
        new.append(c)
        x = F.relu(x)
        x, c = self.conv2(x, caches[1])
        new.append(c)
        x = F.max_pool2d(F.relu(x), (1, 2))
        x, c = self.conv3(x, caches[2])
        new.append(c)
        x = F.max_pool2d(F.relu(x), (1, 2))  # (B, c2, T, F/4)
        x = x.permute(0, 2, 1, 3).reshape(b, t, -1)
        h = F.relu(self.proj(self.dropout(x))).transpose(1, 2)  # (B, H, T)
        for i, block in enumerate(self.blocks):
            h, c = block(h, caches[3 + i])
            new.append(c)
        logits = self.head(self.dropout(h.transpose(1, 2))).reshape(b, t, N_HEADS, N_KEYS)
        return logits, new

    def forward(self, feats: torch.Tensor, *caches: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Inference form (exported to ONNX): sigmoid probabilities (velocity head included)."""
        logits, new = self.forward_logits(feats, list(caches))
        return (torch.sigmoid(logits), *new)
