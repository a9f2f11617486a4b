"""The detailed-mode transcriber of one session: audio chunks in, model ``note`` events out.

Per chunk: numba features (one frame per 20 ms), the model run on the new frames with the stream's
caches (the sliding window of past context that the causal network keeps), note decoding, and
``note`` events (``source: "model"``) as soon as the decoder is sure. Two ways to run the model:

- *blocking* (``analyze``, tests): each chunk's frames are run before ``feed`` returns, so the events a
  chunk decides come out with that chunk;
- *non-blocking* (live sessions, whose pipeline runs inline in the event loop): frames go to the shared
  :class:`~edge_node.inference.batcher.InferenceBatcher` and ``feed`` returns the events of calls that
  have completed since, never waiting; frames that arrive while a call is in flight are sent together
  in the next one. The notes are the same either way; only when they are emitted differs.
"""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from .batcher import InferenceBatcher, Result, shared_batcher
from .decode import NoteDecoder
from .features import HOP_S, HOP_SAMPLES, N_BINS, SAMPLE_RATE_HZ, FeatureStream
from .model import ModelRunner

MODEL_NOTE_ID_BASE = 1_000_000  # model note ids never collide with the kernel's (which count from 0)
FINISH_TIMEOUT_S = 5.0

Emitted = tuple[str, float, dict[str, Any]]


class Transcriber:
    """Streaming transcription of one session (see module docstring)."""

    def __init__(self, runner: ModelRunner | None = None, batcher: InferenceBatcher | None = None,
                 blocking: bool = True, note_id_base: int = MODEL_NOTE_ID_BASE) -> None:
        if runner is None and batcher is None:
            raise ValueError("Transcriber needs a ModelRunner or an InferenceBatcher")
        self._runner = runner
        self._batcher = batcher
        self.blocking = blocking
        self._model: ModelRunner | None = None
        self._waiting: list[tuple[np.ndarray, int]] = []  # audio held while the shared model loads
        self._expected_sample: int | None = None
        self._decoder = NoteDecoder(next_note_id=note_id_base)
        if runner is not None:
            self._use(runner)
        elif batcher is not None and (blocking or batcher.ready):
            self._use(batcher.wait_ready())

    def _use(self, model: ModelRunner) -> None:
        self._model = model
        self.delay_frames = model.info.delay_frames
        self._onset_thr = model.info.thresholds.get("onset", 0.5)
        self._frame_thr = model.info.thresholds.get("frame", 0.5)
        self._reset(0)

    def _ready(self) -> bool:
        """Whether the model is usable; a non-blocking transcriber checks the batcher without waiting."""
        if self._model is not None:
            return True
        assert self._batcher is not None
        if not self._batcher.ready:
            return False
        self._use(self._batcher.wait_ready())  # raises ModelLoadError if loading failed
        return True

    # ------------------------------------------------------------------ public
    def feed(self, chunk: np.ndarray, start_sample: int) -> list[Emitted]:
        """Consume ``chunk`` (mono float32 48 kHz) that starts at session sample ``start_sample``;
        returns the ``note`` events decided so far. A gap in ``start_sample`` restarts the stream."""
        if not self._ready():
            self._waiting.append((np.array(chunk, dtype=np.float32), start_sample))
            return []
        out: list[Emitted] = []
        if self._waiting:
            waiting, self._waiting = self._waiting, []
            for held, at in waiting:
                out += self._feed(held, at, wait=False)
        return out + self._feed(chunk, start_sample, wait=self.blocking)

    def _feed(self, chunk: np.ndarray, start_sample: int, wait: bool) -> list[Emitted]:
        out: list[Emitted] = []
        if self._expected_sample is not None and start_sample != self._expected_sample:
            out += self._close_notes()
            self._reset(start_sample)
        elif self._expected_sample is None:
            self._reset(start_sample)
        self._expected_sample = start_sample + int(np.asarray(chunk).shape[0])
        frames = self._features.push(np.nan_to_num(np.asarray(chunk, dtype=np.float32)))
        if frames.shape[0]:
            self._pending.append(frames)
        out += self._pump(wait=wait)
        return out

    def poll(self, wait: bool = False) -> list[Emitted]:
        """Events of model calls completed since the last feed (``wait``: until none is in flight)."""
        return self._pump(wait=wait) if self._model is not None else []

    def finish(self) -> list[Emitted]:
        """End of audio: flush the model's look-ahead with silence, then end every sounding note."""
        out: list[Emitted] = []
        if self._waiting:  # the stream ended before the shared model was ready: catch up now
            assert self._batcher is not None
            self._use(self._batcher.wait_ready(FINISH_TIMEOUT_S))
            waiting, self._waiting = self._waiting, []
            for held, at in waiting:
                out += self._feed(held, at, wait=False)
        if self._expected_sample is None:
            return out
        tail = np.zeros(self.delay_frames * HOP_SAMPLES, dtype=np.float32)
        frames = self._features.push(tail)
        if frames.shape[0]:
            self._pending.append(frames)
        out += self._pump(wait=True)
        out += self._close_notes()
        self._expected_sample = None
        return out

    # --------------------------------------------------------------- internals
    def _reset(self, start_sample: int) -> None:
        assert self._model is not None
        self._features = FeatureStream()
        self._caches = self._model.zero_caches()
        self._decoder = NoteDecoder(self._onset_thr, self._frame_thr, origin_s=start_sample / SAMPLE_RATE_HZ,
                                    next_note_id=self._decoder.next_note_id)
        self._frames_out = 0  # model output frames seen (the first delay_frames describe nothing)
        self._pending: list[np.ndarray] = []
        self._inflight: Future[Result] | None = None

    def _pump(self, wait: bool) -> list[Emitted]:
        out: list[Emitted] = []
        while True:
            if self._inflight is not None:
                if not (wait or self._inflight.done()):
                    return out
                probs, self._caches = self._inflight.result(timeout=FINISH_TIMEOUT_S)
                self._inflight = None
                out += self._decode(probs)
            if not self._pending:
                return out
            feats = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
            self._pending = []
            if self._batcher is not None:
                self._inflight = self._batcher.submit(feats, self._caches)
            else:
                assert self._model is not None
                probs, self._caches = self._model.run(feats[None], self._caches)
                out += self._decode(probs[0])

    def _decode(self, probs: np.ndarray) -> list[Emitted]:
        skip = max(0, self.delay_frames - self._frames_out)
        self._frames_out += probs.shape[0]
        return [self._event(n) for n in self._decoder.push(probs[skip:])]

    def _close_notes(self) -> list[Emitted]:
        return [self._event(n) for n in self._decoder.close_all()]

    def _event(self, note: Any) -> Emitted:
        return ("note", round(note.onset_s, 6), {
            "note_id": note.note_id,
            "pitch": note.pitch,
            "velocity": note.velocity,
            "end": None if note.end_s is None else round(note.end_s, 6),
            "confidence": round(note.confidence, 3),
            "source": "model",
        })


def transcriber_for(model_path: Path | None, blocking: bool) -> Transcriber:
    """A transcriber for ``model_path`` (None: the shipped model): blocking ones run the model inline
    on their own runner; non-blocking ones share the process-wide batcher."""
    if blocking:
        return Transcriber(runner=ModelRunner(model_path), blocking=True)
    return Transcriber(batcher=shared_batcher(model_path), blocking=False)  # loads on the worker thread


__all__ = ["HOP_S", "MODEL_NOTE_ID_BASE", "N_BINS", "Transcriber", "transcriber_for"]
