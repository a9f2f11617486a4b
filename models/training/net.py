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

    def __init__(self, c1: int = 8, c2: int = 16, hidden: int = 192,
                 dilations: tuple[int, ...] = (1, 2, 4, 8), delay_frames: int = 4,
                 feat_mean: float = -6.0, feat_std: float = 2.0) -> None:
        super().__init__()
        self.delay_frames = delay_frames
        self.register_buffer("feat_mean", torch.tensor(feat_mean))
        self.register_buffer("feat_std", torch.tensor(feat_std))
        self.conv1 = CausalConv2d(1, c1, 3, 5)
        self.conv2 = CausalConv2d(c1, c2, 3, 3)
        self.proj = nn.Linear(c2 * (N_BINS // 4), hidden)
        self.blocks = nn.ModuleList([CausalBlock(hidden, d) for d in dilations])
        self.head = nn.Linear(hidden, N_HEADS * N_KEYS)
        self.dropout = nn.Dropout(0.1)

    def cache_shapes(self, batch: int) -> list[tuple[int, ...]]:
        """Shapes of the caches, in the order ``forward`` takes and returns them."""
        shapes: list[tuple[int, ...]] = [(batch, 1, 2, N_BINS), (batch, self.conv1.conv.out_channels, 2, N_BINS // 2)]
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
        x = F.max_pool2d(F.relu(x), (1, 2))  # (B, c1, T, F/2)
        x, c = self.conv2(x, caches[1])
        new.append(c)
        x = F.max_pool2d(F.relu(x), (1, 2))  # (B, c2, T, F/4)
        x = x.permute(0, 2, 1, 3).reshape(b, t, -1)
        h = F.relu(self.proj(self.dropout(x))).transpose(1, 2)  # (B, H, T)
        for i, block in enumerate(self.blocks):
            h, c = block(h, caches[2 + i])
            new.append(c)
        logits = self.head(self.dropout(h.transpose(1, 2))).reshape(b, t, N_HEADS, N_KEYS)
        return logits, new

    def forward(self, feats: torch.Tensor, *caches: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Inference form (exported to ONNX): sigmoid probabilities (velocity head included)."""
        logits, new = self.forward_logits(feats, list(caches))
        return (torch.sigmoid(logits), *new)


HARMONIC_SHIFTS_BINS = (-24, 0, 24, 38, 48, 56)  # sub-octave, f0, 2f0 .. 5f0 at two bins per semitone


class CausalKeyBlock(nn.Module):
    """Residual causal dilated conv over time, applied to every key with shared weights."""

    def __init__(self, channels: int, dilation: int, kernel: int = 3) -> None:
        super().__init__()
        self.span = (kernel - 1) * dilation
        self.conv = nn.Conv2d(channels, channels, (kernel, 1), dilation=(dilation, 1))
        self.mix = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x: (B, C, T, K); cache: (B, C, span, K)
        full = torch.cat([cache, x], dim=2)
        y = self.mix(F.relu(self.conv(full)))
        return x + y, full[:, :, full.shape[2] - self.span :]


class HarmonicNet(nn.Module):
    """Pitch-equivariant variant: the log-frequency frame is stacked with copies shifted by the
    harmonic intervals (so a note's partials line up on its fundamental's bin), local causal convs
    detect notes at every key with shared weights, per-key dilated temporal blocks add context, and
    a small dense path across keys adds keyboard-wide context (octave and harmonic confusions)."""

    def __init__(self, c1: int = 16, c2: int = 24, dilations: tuple[int, ...] = (1, 2, 4, 8),
                 global_dim: int = 48, delay_frames: int = 4, feat_mean: float = -6.0, feat_std: float = 2.0) -> None:
        super().__init__()
        self.delay_frames = delay_frames
        self.register_buffer("feat_mean", torch.tensor(feat_mean))
        self.register_buffer("feat_std", torch.tensor(feat_std))
        n_h = len(HARMONIC_SHIFTS_BINS)
        self.conv1 = CausalConv2d(n_h, c1, 3, 3)
        self.bn1 = nn.BatchNorm2d(c1)  # batch norm makes this stack learn several times faster
        self.conv2 = CausalConv2d(c1, c2, 3, 3)
        self.bn2 = nn.BatchNorm2d(c2)
        self.glob_in = nn.Linear(c2 * N_KEYS, global_dim)
        self.glob_out = nn.Linear(global_dim, c2 * N_KEYS)
        self.blocks = nn.ModuleList([CausalKeyBlock(c2, d) for d in dilations])
        self.head = nn.Conv2d(c2, N_HEADS, 1)
        self.c2 = c2
        self.proj = nn.Identity()  # (export reads N_BINS from features, not from here)

    def cache_shapes(self, batch: int) -> list[tuple[int, ...]]:
        n_h = len(HARMONIC_SHIFTS_BINS)
        shapes: list[tuple[int, ...]] = [(batch, n_h, 2, N_BINS), (batch, self.conv1.conv.out_channels, 2, N_BINS // 2)]
        shapes += [(batch, self.c2, b.span, N_KEYS) for b in self.blocks]
        return shapes

    def zero_caches(self, batch: int) -> list[torch.Tensor]:
        return [torch.zeros(s) for s in self.cache_shapes(batch)]

    def forward_logits(self, feats: torch.Tensor, caches: list[torch.Tensor]
                       ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, t, nb = feats.shape
        x = (feats - self.feat_mean) / self.feat_std + 3.0  # silence near 0 so zero padding reads as silence
        lo, hi = -min(HARMONIC_SHIFTS_BINS), max(HARMONIC_SHIFTS_BINS)
        padded = F.pad(x, (lo, hi))
        stack = torch.stack([padded[:, :, lo + s : lo + s + nb] for s in HARMONIC_SHIFTS_BINS], dim=1)  # (B,H,T,F)
        new: list[torch.Tensor] = []
        h, c = self.conv1(stack, caches[0])
        new.append(c)
        h = F.max_pool2d(F.relu(self.bn1(h)), (1, 2))  # (B, c1, T, 96): one bin per semitone
        h, c = self.conv2(h, caches[1])
        new.append(c)
        h = F.relu(self.bn2(h))[:, :, :, :N_KEYS]  # (B, c2, T, 88): bin k is key k's fundamental
        g = F.relu(self.glob_in(h.permute(0, 2, 1, 3).reshape(b, t, -1)))
        h = h + self.glob_out(g).reshape(b, t, self.c2, N_KEYS).permute(0, 2, 1, 3)
        for i, block in enumerate(self.blocks):
            h, c = block(h, caches[2 + i])
            new.append(c)
        logits = self.head(h).permute(0, 2, 1, 3)  # (B, T, N_HEADS, K)
        return logits, new

    def forward(self, feats: torch.Tensor, *caches: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, new = self.forward_logits(feats, list(caches))
        return (torch.sigmoid(logits), *new)
