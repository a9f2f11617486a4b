"""One live practice session: a WebRTC peer whose Opus audio is analysed as it arrives.

Audio: the client's Opus track goes through :mod:`edge_node.receiver` (decoded as soon as each packet
is next in order) into the session's :class:`~edge_node.pipeline.StreamingPipeline`, inline in the
event loop. Feedback: every event goes out at once, in order, as JSON on the ``feedback`` data channel
the client created before its offer. Control messages come back on that channel (JSON objects):

- ``{"type": "ping", "id": ...}`` → ``{"type": "pong", "id": ..., "t": <audio time>}``
- ``{"type": "set_mode", "mode": "light"|"detailed"}`` → a ``mode`` event
- ``{"type": "set_piece", "piece": "..."}`` → ``{"type": "ack", "of": "set_piece", ...}``
- ``{"type": "stop"}`` → the pipeline's final events, then the session ends

The events that one audio packet produces leave together, as one bundled SCTP packet
(:func:`edge_node.rtc.send_bundled`). Meter events (``pitch``, ``dynamics``, ``tempo``) may wait up to
``server.feedback_hold_ms`` to share a packet with later ones; any other event (``onset``, ``note``,
``score``, ...) is sent at once, with whatever waits before it, so seq order is kept and onsets are
never delayed.

Control replies (``pong``, ``ack``) carry no ``seq``: ``seq`` numbers feedback events only. Bad control
messages (not JSON, unknown type, too large, too many) get an ``error`` event and change nothing else;
a sustained flood ends the session. A failure inside the analysis becomes an ``error`` event for this
client and the analysis restarts from the next chunk; it never reaches the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import structlog
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc import sdp as aiortc_sdp
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpreceiver import RTCRtpReceiver

from .audio import MonoResampler
from .errors import OfferRejected
from .events import Event, to_json
from .metrics import EdgeMetrics
from .outbox import Outbox
from .pipeline import StreamingPipeline
from .receiver import DEFAULT_FRAME_SAMPLES, AudioReceivePath, install
from .rtc import send_bundled, tune_sockets
from .scoring import PieceError, PieceLibrary, ScoreObserver
from .settings import AnalysisSettings, Mode, ServerSettings
from .tickets import TicketClaims

log = structlog.get_logger(__name__)

FEEDBACK_LABEL = "feedback"
MODES: tuple[Mode, ...] = ("light", "detailed")
MAX_OFFER_CANDIDATES = 64  # each one costs connectivity checks; real clients offer a handful
MAX_OUTBOX_EVENTS = 2000  # events held while the feedback channel is not open yet
ERROR_EVENT_MIN_INTERVAL_S = 1.0  # per error code, for errors a client can provoke at will
CLOSE_FLUSH_S = 1.0  # at a graceful end, time given to the data channel to drain
HOLD_SLACK_S = 0.005  # packets arrive every 20 ms give or take: a hold of 40 ms spans two of them
METER_EVENTS = frozenset({"pitch", "dynamics", "tempo"})  # may wait feedback_hold_ms to share a packet

State = Literal["new", "connecting", "live", "closing", "closed"]


def validate_offer(text: str) -> aiortc_sdp.SessionDescription:
    """Parse a WHIP offer and check the edge can serve it: one audio stream with Opus, a data channel,
    no video. Raises :class:`OfferRejected` with a ``code`` that says what is wrong."""
    if not text.lstrip().startswith("v=0"):
        raise OfferRejected("malformed_sdp", "body is not an SDP offer (it must start with v=0)")
    try:
        desc = aiortc_sdp.SessionDescription.parse(text)
    except Exception as exc:  # aiortc's parser raises whatever the bad line provokes
        raise OfferRejected("malformed_sdp", f"SDP does not parse ({type(exc).__name__})") from None
    if not desc.media:
        raise OfferRejected("malformed_sdp", "SDP offer has no media sections")
    audio = [m for m in desc.media if m.kind == "audio"]
    video = [m for m in desc.media if m.kind == "video"]
    data = [m for m in desc.media if m.kind == "application"]
    if not audio:
        if video:
            raise OfferRejected("no_audio", "offer has only video; the edge needs one audio stream")
        raise OfferRejected("no_audio", "offer has no audio stream")
    if video:
        raise OfferRejected("video_not_supported", "the edge takes audio only; remove the video stream")
    if len(audio) > 1:
        raise OfferRejected("too_many_audio", "offer has more than one audio stream")
    if not data:
        raise OfferRejected(
            "no_data_channel", f"offer has no data channel; create one labelled {FEEDBACK_LABEL!r}"
        )
    media = audio[0]
    if media.direction not in (None, "sendonly", "sendrecv"):
        raise OfferRejected("bad_direction", f"audio direction {media.direction!r} sends nothing")
    if not any(c.mimeType.lower() == "audio/opus" for c in media.rtp.codecs):
        names = ", ".join(sorted({c.mimeType for c in media.rtp.codecs})) or "none"
        raise OfferRejected("unsupported_codec", f"audio must be Opus; offer has {names}")
    if media.ice is None or media.dtls is None:
        raise OfferRejected("malformed_sdp", "audio section lacks ICE or DTLS parameters")
    candidates = sum(len(m.ice_candidates) for m in desc.media)
    if candidates > MAX_OFFER_CANDIDATES:
        raise OfferRejected(
            "too_many_candidates", f"offer has {candidates} ICE candidates; at most {MAX_OFFER_CANDIDATES}"
        )
    return desc


class _TokenBucket:
    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate = rate_per_s
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class PracticeSession:
    """A peer connection, its receive path, its pipeline and its feedback channel.

    ``request_close(session, reason)`` is how the session asks its owner (the session manager) to end
    it; the owner calls :meth:`aclose`.
    """

    def __init__(
        self,
        claims: TicketClaims,
        token_digest: bytes,
        server: ServerSettings,
        analysis: AnalysisSettings,
        metrics: EdgeMetrics,
        request_close: Callable[[PracticeSession, str], None],
    ) -> None:
        self.id = claims.session_id
        self.claims = claims
        self.token_digest = token_digest
        self.server = server
        self.metrics = metrics
        self._request_close = request_close
        mode: Mode = claims.mode if claims.mode in MODES else analysis.default_mode  # type: ignore[assignment]
        self.pipeline = StreamingPipeline(mode=mode, settings=analysis)
        self._analysis = analysis
        self.piece = claims.piece
        self.state: State = "new"
        self.created_at = time.monotonic()
        self.first_audio_at: float | None = None
        self.last_audio_at: float | None = None
        self.close_reason: str | None = None
        self.pc: RTCPeerConnection | None = None
        self.channel: RTCDataChannel | None = None
        self.receive_path: AudioReceivePath | None = None
        self._uninstall: Callable[[], None] | None = None
        self._stock_task: asyncio.Task[None] | None = None
        self._outbox: list[str] = []  # feedback written before the channel opened
        self._pending: list[str] = []  # feedback of this moment, sent together (bundled)
        self._pending_since: float | None = None  # arrival of the audio behind the oldest held meter event
        self._batching = False  # inside _on_audio: hold sends until the packet's events are all made
        self._hold_s = server.feedback_hold_ms / 1000.0
        self._t_offset_s = 0.0
        self._bucket = _TokenBucket(server.dc_rate_per_s, server.dc_burst)
        self._dropped_messages = 0
        self._last_error_at: dict[str, float] = {}
        self._finished = False
        self._synced: tuple[int, ...] = (0, 0, 0, 0, 0)
        self._closed = asyncio.Event()
        self.results: Outbox | None = None  # result sync (issue 5): set by the session manager
        # score following (issue 7): the edge's piece library, set by the session manager
        self.pieces: PieceLibrary | None = None
        self._piece_task: asyncio.Task[None] | None = None
        self.log = log.bind(session_id=self.id, user=claims.user)

    # ------------------------------------------------------------- lifecycle
    async def answer(self, offer: str) -> str:
        """Accept the (validated) offer and return the SDP answer, ICE candidates included."""
        if self.state != "new":
            raise RuntimeError(f"session {self.id} already answered")
        self.state = "connecting"
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)
        transceiver = pc.addTransceiver("audio", direction="recvonly")
        caps = RTCRtpReceiver.getCapabilities("audio")
        assert caps is not None
        transceiver.setCodecPreferences([c for c in caps.codecs if c.mimeType.lower() == "audio/opus"])
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        except Exception as exc:  # aiortc: ValueError / OperationError / InternalError on odd offers
            raise OfferRejected("unacceptable_offer", f"offer cannot be negotiated: {exc}") from None
        opus_pts = [c.payloadType for c in transceiver._codecs if c.mimeType.lower() == "audio/opus"]
        if not opus_pts:
            raise OfferRejected("unsupported_codec", "no Opus payload type could be negotiated")
        media = None
        if self.server.receive_path == "low_latency":
            path = self.receive_path = AudioReceivePath(
                self._on_audio, reorder_window_s=self.server.reorder_window_ms / 1000.0
            )
            self._uninstall, media = install(transceiver.receiver, path, [p for p in opus_pts if p is not None])
        else:
            self._stock_task = asyncio.create_task(
                self._read_stock_track(transceiver.receiver.track), name=f"edge-session-{self.id}-track"
            )
        await pc.setLocalDescription(await pc.createAnswer())
        tune_sockets(pc, media=media if self.receive_path is not None else None)
        local = pc.localDescription
        assert local is not None
        return local.sdp

    async def aclose(self, reason: str) -> None:
        """End the session: final events if it can still say them, then the peer. Safe twice."""
        if self.state in ("closing", "closed"):
            await self._closed.wait()
            return
        self.state = "closing"
        self.close_reason = reason
        self.log.info("session closing", reason=reason)
        try:
            if not self._finished and reason in ("client_stop", "deleted", "shutdown"):
                self._finish_pipeline()
                await self._drain_channel(CLOSE_FLUSH_S)
            if self.receive_path is not None:
                self.sync_metrics()
                self.receive_path.close()
            if self._uninstall is not None:
                self._uninstall()
            if self._stock_task is not None:
                self._stock_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._stock_task
            if self._piece_task is not None:
                self._piece_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._piece_task
            if self.pc is not None:
                await self.pc.close()
        finally:
            self.channel = None
            self.pc = None
            self.receive_path = None
            self._outbox.clear()
            self._pending.clear()
            self.state = "closed"
            self._closed.set()

    def expired(self, now: float) -> str | None:
        """Why the watchdog should end this session now, if it should."""
        if self.state in ("closing", "closed"):
            return None
        if now - self.created_at > self.server.max_session_s:
            return "max_duration"
        if self.last_audio_at is None:
            if now - self.created_at > self.server.start_timeout_s:
                return "no_audio"
        elif now - self.last_audio_at > self.server.media_timeout_s:
            return "media_timeout"
        return None

    # ------------------------------------------------------------- audio in
    def _on_audio(self, samples: np.ndarray, arrival: float) -> None:
        if self.state in ("closing", "closed") or self._finished:
            return
        self.last_audio_at = arrival
        if self.first_audio_at is None:
            self.first_audio_at = arrival
            if self.state == "connecting":
                self.state = "live"
        self._batching = True
        try:
            events = self.pipeline.process(samples)
            for event in events:
                self._send_event(event)
        except Exception as exc:
            self._batching = False
            self._analysis_failed(exc)
            return
        finally:
            self._batching = False
        if not self._pending:
            return
        if self._pending_since is None:
            self._pending_since = arrival
        if (
            arrival - self._pending_since >= self._hold_s - HOLD_SLACK_S
            or any(e["type"] not in METER_EVENTS for e in events)
        ):
            self.flush_feedback()
            self.metrics.feedback_latency.observe(time.monotonic() - arrival)

    async def _read_stock_track(self, track: MediaStreamTrack) -> None:
        """The stock receive path (``server.receive_path = "stock"``): aiortc's jitter buffer, decoder
        thread and track queue. Kept only as the baseline the low-latency path is measured against."""
        resampler = MonoResampler()
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                self._on_audio(resampler.convert(frame), time.monotonic())  # type: ignore[arg-type]

    def _analysis_failed(self, exc: Exception) -> None:
        """Report the failure to this client and restart the analysis, keeping seq and time base."""
        self.log.exception("analysis failed", error=str(exc))
        old = self.pipeline
        self._t_offset_s += old.now_s
        self.pipeline = StreamingPipeline(
            mode=old.mode, settings=self._analysis, seq_start=old.sequencer.next_seq
        )
        if any(isinstance(o, ScoreObserver) for o in old.observers) and self.piece is not None:
            self.follow_piece(self.piece)  # a fresh follower on the fresh time base
        self._send_error("analysis_failed", f"analysis failed and restarted: {type(exc).__name__}")

    def _finish_pipeline(self) -> None:
        self._finished = True
        try:
            events = self.pipeline.finish()
        except Exception as exc:
            self.log.exception("analysis finish failed", error=str(exc))
            return
        for event in events:
            self._send_event(event)

    # -------------------------------------------------------- feedback out
    def _send_event(self, event: Event) -> None:
        if self._t_offset_s:
            event["t"] = round(event["t"] + self._t_offset_s, 6)
        self.metrics.event_sent(event["type"])
        self._send_text(to_json(event))
        if self.results is not None:  # result sync (issue 5): note/score/summary → outbox (memory only)
            self.results.record_event(self.id, self.claims.user, event)

    def follow_piece(self, piece_id: str | None) -> None:
        """Judge the playing against ``piece_id`` from the edge's library (None stops judging).

        The piece is parsed off the event loop; until it is ready the session keeps its current
        follower. An unknown or unreadable piece is an ``error`` event (``piece_unavailable``).
        """
        if self._piece_task is not None:
            self._piece_task.cancel()
            self._piece_task = None
        if piece_id is None:
            self._set_score_observer(None)
            return
        if self.pieces is None:
            self._send_error("piece_unavailable", "this edge has no piece library")
            return
        self._piece_task = asyncio.create_task(self._load_piece(piece_id), name=f"edge-session-{self.id}-piece")

    async def _load_piece(self, piece_id: str) -> None:
        assert self.pieces is not None
        try:
            piece = await asyncio.to_thread(self.pieces.load, piece_id)
        except PieceError as exc:
            self._send_error("piece_unavailable", exc.reason)
            return
        self._set_score_observer(ScoreObserver(piece))

    def _set_score_observer(self, observer: ScoreObserver | None) -> None:
        kept = [o for o in self.pipeline.observers if not isinstance(o, ScoreObserver)]
        self.pipeline.observers = kept + ([observer] if observer is not None else [])

    def _send_error(self, code: str, message: str) -> None:
        self.metrics.errors.labels(code).inc()
        self._send_event(self.pipeline.make_event("error", self.pipeline.now_s, code=code, message=message))

    def _send_reply(self, reply: dict[str, Any]) -> None:
        self._send_text(json.dumps(reply, separators=(",", ":")))

    def _send_text(self, text: str) -> None:
        channel = self.channel
        if channel is None or channel.readyState != "open":
            if self.state in ("closing", "closed"):
                return
            if len(self._outbox) >= MAX_OUTBOX_EVENTS:
                self._close_soon("feedback_channel_missing")
                return
            self._outbox.append(text)
            return
        if channel.bufferedAmount > self.server.dc_max_buffered_bytes:
            self._close_soon("client_too_slow")
            return
        self._pending.append(text)
        if not self._batching:
            self.flush_feedback()

    def flush_stale_feedback(self, now: float) -> None:
        """Send held meter events whose audio stopped coming (called by the manager's watchdog)."""
        if self._pending_since is not None and now - self._pending_since >= self._hold_s:
            self.flush_feedback()

    def flush_feedback(self) -> None:
        """Send the feedback that waits (bundled when aiortc's stock path has nothing queued)."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        self._pending_since = None
        channel = self.channel
        if channel is None or channel.readyState != "open":
            return
        try:
            sent = send_bundled(channel, pending)
        except Exception as exc:  # DTLS torn down under us: the chunks are in SCTP's sent queue or the peer is gone
            self.log.warning("bundled feedback send failed", error=repr(exc))
            return
        if not sent:
            for text in pending:
                channel.send(text)

    async def _drain_channel(self, timeout_s: float) -> None:
        """Give queued feedback up to ``timeout_s`` to leave before the peer is closed."""
        channel = self.channel
        if channel is None or channel.readyState != "open" or channel.bufferedAmount == 0:
            return
        drained = asyncio.Event()
        channel.bufferedAmountLowThreshold = 0
        channel.once("bufferedamountlow", drained.set)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drained.wait(), timeout_s)

    # -------------------------------------------------------- control in
    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != FEEDBACK_LABEL or self.channel is not None:
            self.log.info("refusing data channel", label=channel.label)
            channel.close()
            return
        self.channel = channel
        channel.on("message", self._on_message)
        channel.on("close", lambda: self._close_soon("feedback_channel_closed"))
        if channel.readyState == "open":
            self._flush_outbox()
        else:
            channel.on("open", self._flush_outbox)

    def _flush_outbox(self) -> None:
        channel = self.channel
        if channel is None:
            return
        outbox, self._outbox = self._outbox, []
        self._pending = outbox + self._pending
        self.flush_feedback()

    def _on_message(self, message: str | bytes) -> None:
        if self.state in ("closing", "closed"):
            return
        if not self._bucket.take():
            self._drop_message("rate_limited", "too many control messages; slow down")
            return
        if len(message) > self.server.dc_max_message_bytes:
            self._drop_message(
                "message_too_large", f"control messages are at most {self.server.dc_max_message_bytes} bytes"
            )
            return
        if isinstance(message, bytes):
            self._bad_message("control messages are JSON text, not binary")
            return
        try:
            msg = json.loads(message)
        except ValueError:
            self._bad_message("control message is not JSON")
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            self._bad_message("control message must be an object with a string 'type'")
            return
        self._control(msg)

    def _control(self, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if kind == "ping":
            reply: dict[str, Any] = {"type": "pong", "t": round(self._t_offset_s + self.pipeline.now_s, 6)}
            if isinstance(msg.get("id"), str | int | float):
                reply["id"] = msg["id"]
            self._send_reply(reply)
        elif kind == "set_mode":
            mode = msg.get("mode")
            if mode not in MODES:
                self._bad_message(f"set_mode needs mode 'light' or 'detailed', not {mode!r}")
                return
            self._send_event(self.pipeline.set_mode(mode, reason="client"))
        elif kind == "set_piece":
            piece = msg.get("piece")
            if piece is not None and not (isinstance(piece, str) and 0 < len(piece) <= 256):
                self._bad_message("set_piece needs a piece id (a string of 1..256 characters) or null")
                return
            self.piece = piece
            self._send_reply({"type": "ack", "of": "set_piece", "piece": piece})
            self.follow_piece(piece)
        elif kind == "stop":
            self._close_soon("client_stop")
        else:
            self._bad_message(f"unknown control message type {kind[:40]!r}")
            return
        self.metrics.control_messages.labels("ok").inc()

    def _bad_message(self, message: str) -> None:
        self.metrics.control_messages.labels("bad").inc()
        self._send_error_limited("bad_message", message)

    def _drop_message(self, code: str, message: str) -> None:
        self.metrics.control_messages.labels(code).inc()
        self._dropped_messages += 1
        if self._dropped_messages > self.server.dc_max_dropped:
            self._close_soon("flood")
            return
        self._send_error_limited(code, message)

    def _send_error_limited(self, code: str, message: str) -> None:
        now = time.monotonic()
        if now - self._last_error_at.get(code, -1e9) >= ERROR_EVENT_MIN_INTERVAL_S:
            self._last_error_at[code] = now
            self._send_error(code, message)

    # ------------------------------------------------------------ helpers
    def _on_connection_state(self) -> None:
        pc = self.pc
        if pc is None:
            return
        if pc.connectionState in ("failed", "closed"):
            self._close_soon(f"peer_{pc.connectionState}")

    def _close_soon(self, reason: str) -> None:
        if self.state not in ("closing", "closed"):
            self._request_close(self, reason)

    def sync_metrics(self) -> None:
        """Add the receive path's counts since the last call to the edge's counters."""
        path = self.receive_path
        if path is None:
            return
        st = path.stats
        now = (st.decoded_frames, st.late_dropped, st.duplicates, st.concealed_samples, st.decode_errors)
        prev = self._synced
        m = self.metrics
        if now[0] > prev[0]:
            m.audio_frames.inc(now[0] - prev[0])
        for i, kind in ((1, "late"), (2, "duplicate"), (4, "undecodable")):
            if now[i] > prev[i]:
                m.frames_dropped.labels(kind).inc(now[i] - prev[i])
        if now[3] > prev[3]:
            m.frames_dropped.labels("concealed").inc((now[3] - prev[3]) / DEFAULT_FRAME_SAMPLES)
        self._synced = now

    def info(self) -> dict[str, Any]:
        stats = self.receive_path.stats if self.receive_path is not None else None
        return {
            "session_id": self.id, "user": self.claims.user, "state": self.state,
            "mode": self.pipeline.mode, "piece": self.piece,
            "audio_s": round(self._t_offset_s + self.pipeline.now_s, 3),
            "receive": None if stats is None else vars(stats).copy(),
        }

    async def wait_closed(self) -> None:
        await self._closed.wait()
