"""Errors of the inference package.

    InferenceError              root of everything raised here
    ├── ModelLoadError          the ONNX model is missing, unreadable or lacks its metadata
    └── BatcherClosedError      work submitted to a batcher that has been closed
"""

from __future__ import annotations

from ..errors import SeminoteEdgeError


class InferenceError(SeminoteEdgeError):
    """Root of the inference package's errors."""


class ModelLoadError(InferenceError):
    """The transcription model could not be loaded; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot load transcription model {path}: {reason}")
        self.path = path
        self.reason = reason


class BatcherClosedError(InferenceError):
    """The shared inference batcher was closed while a stream still needed it."""
