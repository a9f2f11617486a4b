"""Audio in: any PyAV-readable file or live frames -> mono float32 at 48 kHz, in 20 ms chunks.

Resampling and downmixing are PyAV's (libswresample), never done by hand. Chunks are delivered in
order and are exactly ``CHUNK_SAMPLES`` long, except possibly the last one of a file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import av.error
import numpy as np

from .errors import AudioInputError

SAMPLE_RATE_HZ = 48_000
CHUNK_SAMPLES = 960  # 20 ms at 48 kHz
CHUNK_S = CHUNK_SAMPLES / SAMPLE_RATE_HZ


class MonoResampler:
    """Turns PyAV audio frames of any layout/rate/format into mono float32 at 48 kHz."""

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE_HZ)

    def convert(self, frame: av.AudioFrame | None) -> np.ndarray:
        """Resample one frame (``None`` flushes); returns the float32 samples produced so far."""
        out = self._resampler.resample(frame)
        if not out:
            return np.zeros(0, dtype=np.float32)
        if len(out) == 1:
            return out[0].to_ndarray().reshape(-1).astype(np.float32, copy=False)
        return np.concatenate([f.to_ndarray().reshape(-1) for f in out]).astype(np.float32, copy=False)


class Chunker:
    """Re-blocks a stream of sample arrays into fixed chunks of ``CHUNK_SAMPLES``."""

    def __init__(self, chunk_samples: int = CHUNK_SAMPLES) -> None:
        self.chunk_samples = chunk_samples
        self._buf = np.zeros(0, dtype=np.float32)

    def push(self, samples: np.ndarray) -> Iterator[np.ndarray]:
        buf = np.concatenate([self._buf, samples]) if self._buf.size else samples
        n = self.chunk_samples
        full = (buf.size // n) * n
        for start in range(0, full, n):
            yield buf[start : start + n]
        self._buf = buf[full:].copy()

    def flush(self) -> Iterator[np.ndarray]:
        if self._buf.size:
            yield self._buf
            self._buf = np.zeros(0, dtype=np.float32)


def iter_file_chunks(path: str | Path, chunk_samples: int = CHUNK_SAMPLES) -> Iterator[np.ndarray]:
    """Decode ``path`` incrementally and yield mono float32 48 kHz chunks in order.

    Raises :class:`AudioInputError` with a one-line reason when the file cannot be opened, has no
    audio stream, or is corrupt part-way (chunks already yielded stay valid).
    """
    name = str(path)
    try:
        container = av.open(name, mode="r")
    except FileNotFoundError as exc:
        raise AudioInputError(name, "no such file") from exc
    except IsADirectoryError as exc:
        raise AudioInputError(name, "is a directory, not an audio file") from exc
    except PermissionError as exc:
        raise AudioInputError(name, "permission denied") from exc
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise AudioInputError(name, f"not a readable audio file ({_describe(exc)})") from exc
    with container:
        if not container.streams.audio:
            raise AudioInputError(name, "contains no audio stream")
        stream = container.streams.audio[0]
        resampler = MonoResampler()
        chunker = Chunker(chunk_samples)
        try:
            for frame in container.decode(stream):
                yield from chunker.push(resampler.convert(frame))
        except (av.error.FFmpegError, ValueError) as exc:
            raise AudioInputError(name, f"audio is corrupt ({_describe(exc)})") from exc
        yield from chunker.push(resampler.convert(None))
        yield from chunker.flush()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def probe_duration_s(path: str | Path) -> float | None:
    """Duration of the first audio stream from the container's metadata (None when unknown)."""
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            if container.duration is not None:
                return container.duration / 1_000_000
    except (av.error.FFmpegError, OSError, ValueError):
        return None
    return None
