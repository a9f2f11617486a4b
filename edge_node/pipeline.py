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
    ) -> None:
        self.settings = settings or AnalysisSettings()
        self.sequencer = Sequencer(seq_start)
        self.frontend = KernelFrontEnd(self.settings)
        self.observers: list[Observer] = list(observers)
        self.mode: Mode = mode
        self._finished = False

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
        now = self.now_s
        for observer in self.observers:
            events.extend(seq.make(type_, t, **f) for type_, t, f in observer.finish(now))
        return events
