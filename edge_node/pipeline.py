"""The causal streaming pipeline that every live session and ``seminote-edge analyze`` run.

Feed it mono float32 48 kHz audio in order (normally 20 ms chunks); each call returns the events it
became sure of while processing that audio. Nothing looks further ahead than :attr:`lookahead_s`.

Observers (the score follower, the detailed-mode transcriber) plug in through :class:`Observer`: they
see every event the kernels emit and may add their own, which are sequenced with the rest.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np

from .audio import CHUNK_SAMPLES, SAMPLE_RATE_HZ
from .dsp.frontend import LOOKAHEAD_S, KernelFrontEnd
from .errors import PipelineError
from .events import Event, Sequencer
from .settings import AnalysisSettings, Mode

Emitted = tuple[str, float, dict[str, Any]]  # (type, t, fields) before sequencing


class Observer(Protocol):
    """Something that follows the event stream and may emit events of its own."""

    def observe(self, events: list[Event], now_s: float) -> Iterable[Emitted]:
        """Called once per processed chunk with that chunk's events; ``now_s`` is audio time."""
        ...

    def finish(self, now_s: float) -> Iterable[Emitted]:
        """Called once at the end of the session."""
        ...


# --- detailed-mode transcriber hook (owned by edge_node.inference) -------------------------------
class ChunkTranscriber(Protocol):
    """Receives the raw audio in detailed mode (``edge_node.inference.transcriber.Transcriber``)."""

    def feed(self, chunk: np.ndarray, start_sample: int) -> list[Emitted]:
        """Called with every chunk while the mode is detailed; ``start_sample`` is its session index."""
        ...

    def finish(self) -> list[Emitted]:
        """Called once at the end of the session if it was ever fed."""
        ...
# --- end of hook ----------------------------------------------------------------------------------


class StreamingPipeline:
    """One session's analysis: kernels, optional observers, event sequencing."""

    sample_rate = SAMPLE_RATE_HZ
    chunk_samples = CHUNK_SAMPLES
    lookahead_s = LOOKAHEAD_S

    def __init__(
        self,
        mode: Mode = "light",
        settings: AnalysisSettings | None = None,
        observers: Iterable[Observer] = (),
        seq_start: int = 0,
        transcriber: ChunkTranscriber | None = None,
    ) -> None:
        self.settings = settings or AnalysisSettings()
        self.sequencer = Sequencer(seq_start)
        self.frontend = KernelFrontEnd(self.settings)
        self.observers: list[Observer] = list(observers)
        self.mode: Mode = mode
        self._finished = False
        # detailed-mode transcriber hook: None means "the shipped model, on the shared batcher, once
        # detailed mode is first used" (live sessions); analyze passes a blocking one
        self.transcriber: ChunkTranscriber | None = transcriber
        self._transcriber_fed = False
        self._samples_in = 0

    @property
    def samples_seen(self) -> int:
        return self.frontend.samples_seen

    @property
    def now_s(self) -> float:
        return self.frontend.samples_seen / SAMPLE_RATE_HZ

    def make_event(self, type_: str, t: float, **fields: Any) -> Event:
        """Sequence an event that the caller (e.g. the session) originates."""
        return self.sequencer.make(type_, t, **fields)

    def set_mode(self, mode: Mode, reason: str) -> Event:
        self.mode = mode
        return self.sequencer.make("mode", self.now_s, mode=mode, reason=reason)

    def process(self, chunk: np.ndarray) -> list[Event]:
        """Analyse the next piece of audio; returns the events decided by it, in order."""
        if self._finished:
            raise PipelineError("process() after finish()")
        seq = self.sequencer
        events = [seq.make(type_, t, **fields) for type_, t, fields in self.frontend.process(chunk)]
        if self.mode == "detailed":  # detailed-mode transcriber hook
            if self.transcriber is None:
                from .inference.transcriber import transcriber_for

                self.transcriber = transcriber_for(self.settings.model_path, blocking=False)
            self._transcriber_fed = True
            events.extend(seq.make(type_, t, **f) for type_, t, f in self.transcriber.feed(chunk, self._samples_in))
        self._samples_in += int(chunk.shape[0])
        if self.observers:
            now = self.now_s
            for observer in self.observers:
                events.extend(seq.make(type_, t, **f) for type_, t, f in observer.observe(events, now))
        return events

    def finish(self) -> list[Event]:
        """End of audio: emits what can only be said at the end (e.g. a summary)."""
        if self._finished:
            return []
        self._finished = True
        seq = self.sequencer
        events = [seq.make(type_, t, **fields) for type_, t, fields in self.frontend.finish()]
        if self.transcriber is not None and self._transcriber_fed:  # detailed-mode transcriber hook
            events.extend(seq.make(type_, t, **f) for type_, t, f in self.transcriber.finish())
        now = self.now_s
        for observer in self.observers:
            events.extend(seq.make(type_, t, **f) for type_, t, f in observer.finish(now))
        return events
