"""Cross-session batching of model calls: one worker thread owns the ONNX session (pinned to one
intra-op thread) and runs every request queued while it was busy in one call.

Sessions submit their newest feature frames with their model caches and get a
``concurrent.futures.Future``; when the edge is idle a request runs alone at once, when it is busy
the requests of many sessions share a call (grouped by frame count), which is where batching pays.
Given a path instead of a loaded runner, the worker loads the model (and compiles the numba feature
kernel) on its own thread, so the event loop that starts detailed mode never waits for that.
"""

from __future__ import annotations

import asyncio
import atexit
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import BatcherClosedError, ModelLoadError
from .features import HOP_SAMPLES, FeatureStream
from .model import ModelRunner

MAX_BATCH_SESSIONS = 32  # more than this many queued requests are split over several calls

Result = tuple[np.ndarray, list[np.ndarray]]  # probs (T, N_HEADS, N_KEYS), caches (batch dim 1)


@dataclass
class _Request:
    feats: np.ndarray  # (T, N_BINS)
    caches: list[np.ndarray]  # each (1, ...)
    future: Future[Result] = field(default_factory=Future)


class InferenceBatcher:
    """The shared model executor of an edge (``async with`` or ``start()``/``close()``)."""

    def __init__(self, runner: ModelRunner | None = None, model_path: Path | None = None,
                 max_batch: int = MAX_BATCH_SESSIONS) -> None:
        self.runner: ModelRunner | None = runner
        self.model_path = model_path
        self.load_error: ModelLoadError | None = None
        self._ready = threading.Event()
        if runner is not None:
            self._ready.set()
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()
        self.calls = 0  # model calls made (for metrics and tests)
        self.requests = 0

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> InferenceBatcher:
        with self._lock:
            if self._closed:
                raise BatcherClosedError("inference batcher is closed; create a new one")
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="inference-batcher", daemon=True)
                self._thread.start()
        return self

    def close(self) -> None:
        """Stop taking work, finish what is queued, stop the worker. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join()

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    async def __aenter__(self) -> InferenceBatcher:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __enter__(self) -> InferenceBatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def ready(self) -> bool:
        """True once the model is loaded (or failed to load: see ``load_error``)."""
        return self._ready.is_set()

    def wait_ready(self, timeout_s: float | None = None) -> ModelRunner:
        """Block until the model is loaded; raises its :class:`ModelLoadError` if it could not be."""
        if not self._ready.wait(timeout_s):
            raise ModelLoadError(str(self.model_path), f"not loaded within {timeout_s} s")
        if self.load_error is not None:
            raise self.load_error
        assert self.runner is not None
        return self.runner

    def _load(self) -> None:
        try:
            self.runner = ModelRunner(self.model_path)
            FeatureStream().push(np.zeros(2 * HOP_SAMPLES, dtype=np.float32))  # compile the kernel here
        except ModelLoadError as exc:
            self.load_error = exc
        finally:
            self._ready.set()

    # ----------------------------------------------------------------- work
    def submit(self, feats: np.ndarray, caches: list[np.ndarray]) -> Future[Result]:
        """Queue one stream's frames ``(T, N_BINS)`` with its caches; the future gives its outputs.
        Requests queued before :meth:`start` wait for it (and then share calls)."""
        if self._closed:
            raise BatcherClosedError("inference batcher is closed")
        req = _Request(np.asarray(feats, dtype=np.float32), caches)
        self._queue.put(req)
        return req.future

    def _work(self) -> None:
        if not self._ready.is_set():
            self._load()
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            pending = [first]
            while len(pending) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                pending.append(nxt)
            by_len: dict[int, list[_Request]] = {}
            for req in pending:
                by_len.setdefault(req.feats.shape[0], []).append(req)
            for group in by_len.values():
                self._run(group)
        # fail whatever arrived after close
        while True:
            try:
                late = self._queue.get_nowait()
            except queue.Empty:
                return
            if late is not None:
                late.future.set_exception(BatcherClosedError("inference batcher closed"))

    def _run(self, group: list[_Request]) -> None:
        try:
            if self.runner is None:
                raise self.load_error or ModelLoadError(str(self.model_path), "not loaded")
            feats = np.stack([r.feats for r in group])
            caches = [np.concatenate(parts, axis=0) for parts in zip(*(r.caches for r in group), strict=True)]
            probs, new = self.runner.run(feats, caches)
        except Exception as exc:  # delivered to every waiting session, never kills the worker
            for r in group:
                r.future.set_exception(exc)
            return
        self.calls += 1
        self.requests += len(group)
        for i, r in enumerate(group):
            r.future.set_result((probs[i], [c[i : i + 1] for c in new]))


_shared: dict[Path, InferenceBatcher] = {}
_shared_lock = threading.Lock()


def shared_batcher(model_path: Path | None = None) -> InferenceBatcher:
    """The process-wide batcher for ``model_path`` (started on first use), shared by live sessions."""
    key = Path(model_path) if model_path is not None else Path("")
    with _shared_lock:
        b = _shared.get(key)
        if b is None or b.closed or b.load_error is not None:
            b = InferenceBatcher(model_path=model_path).start()
            _shared[key] = b
        return b


@atexit.register
def _close_shared() -> None:
    """Stop the shared workers before the interpreter tears down onnxruntime under them."""
    with _shared_lock:
        batchers = list(_shared.values())
        _shared.clear()
    for b in batchers:
        b.close()
