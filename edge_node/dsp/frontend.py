"""Per-chunk orchestration of the kernels: onset, pitch, dynamics, tempo and light-mode notes.

Audio is processed in whole 20 ms chunks (960 samples); a trailing partial chunk at the end of a
stream is analysed zero-padded. Look-ahead bound (``LOOKAHEAD_S``): an event about time ``t`` is
decided from audio up to at most ``t + LOOKAHEAD_S``:

- ``onset``: the detecting hop ends at most ``2 * HOP`` after the refined onset time in practice,
  bounded by the refinement span (``WINDOW_SAMPLES``) -> 21.3 ms;
- ``pitch``: ``t`` is the centre of the newest YIN window, decided half a window later -> 10.7 ms;
- ``note``: ``t`` is the onset; the pitch is named by the first confident YIN frame whose window
  reaches ``NOTE_SETTLE_SAMPLES`` past the onset, waiting at most ``NOTE_MAX_WAIT_CHUNKS`` frames:
  decided at most 15 ms + 4 x 20 ms = 95 ms after ``t``; a note's closing event (same ``note_id``,
  ``end`` set) is decided at ``end`` (release) or at the next note's onset;
- ``dynamics``/``tempo``: ``t`` is the end of the audio they summarise (no look-ahead).

``LOOKAHEAD_S`` (100 ms) bounds all of these.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from ..settings import AnalysisSettings
from . import dynamics, onset, pitch, tempo

SAMPLE_RATE = 48_000
CHUNK = 960
HOPS_PER_CHUNK = CHUNK // onset.HOP_SAMPLES
HIST_SAMPLES = 4096
ONSET_TIME_OFFSET_S = 0.003  # refined onsets land ~3 ms after the MIDI note-on (tuning set median)

GATE_MIN_DBFS = -100.0  # absolute floor of the voicing gate (digital silence)
GATE_ABOVE_NOISE_DB = 6.0  # the gate sits this far above the tracked noise floor
NOISE_BUCKET_CHUNKS = 50  # noise floor = minimum chunk level over the last few 1 s buckets
NOISE_BUCKETS = 5
PITCH_MIN_CONFIDENCE = 0.3
PITCH_CLEAR_CONFIDENCE = 0.6
NOTE_MIN_CONFIDENCE = 0.6  # a note is only named from a clearly periodic frame
NOTE_SETTLE_SAMPLES = 720  # the YIN window must reach 15 ms past the onset before it names the pitch
NOTE_MAX_WAIT_CHUNKS = 4
TEMPO_STALE_S = 3.0  # tempo events stop this long after the last onset
TEMPO_MIN_WEIGHT = 0.1  # accent weight of the weakest onset in the tempo estimate
NOTE_RELEASE_DB = 35.0  # a note ends when the level falls this far below its attack peak
LOOKAHEAD_S = 0.1
assert NOTE_SETTLE_SAMPLES + NOTE_MAX_WAIT_CHUNKS * CHUNK <= LOOKAHEAD_S * SAMPLE_RATE

Emitted = tuple[str, float, dict[str, Any]]


def hz_to_midi(f0: float) -> float:
    return 69.0 + 12.0 * math.log2(f0 / 440.0)


class _PendingNote:
    __slots__ = ("onset_pos", "t", "strength", "waited", "pre_power", "peak_power", "hops_seen")

    def __init__(self, onset_pos: int, t: float, strength: float, pre_power: float) -> None:
        self.onset_pos = onset_pos
        self.t = t
        self.strength = strength
        self.waited = 0
        self.pre_power = pre_power
        self.peak_power = 0.0
        self.hops_seen = 0


_warmed = False


def warm_up_kernels() -> None:
    """Compile (or load from the numba cache) every kernel now, including those that only run once
    onsets exist (tempo), so no session pays the JIT in the middle of its audio."""
    global _warmed
    if _warmed:
        return
    beats = np.arange(8, dtype=np.float64) * 0.5
    tempo.estimate_tempo(beats, np.ones_like(beats), 4.0)
    _warmed = True


class KernelFrontEnd:
    """Holds the kernel state of one stream and turns chunks into (type, t, fields) tuples."""

    def __init__(self, settings: AnalysisSettings) -> None:
        warm_up_kernels()
        self.settings = settings
        self.samples_seen = 0
        self._hist = np.zeros(HIST_SAMPLES, dtype=np.float64)
        self._pending_audio = np.zeros(0, dtype=np.float32)
        self._prev_log, self._odf_ring, self._onset_st = onset.new_onset_state()
        self._out_pos = np.zeros(HOPS_PER_CHUNK, dtype=np.int64)
        self._out_strength = np.zeros(HOPS_PER_CHUNK, dtype=np.float64)
        self._out_odf = np.zeros(HOPS_PER_CHUNK, dtype=np.float64)
        self._hop_pow = np.zeros(HOPS_PER_CHUNK, dtype=np.float64)
        self._recent_hop_pow: deque[float] = deque([0.0] * 8, maxlen=8)
        self._chunks = 0
        self._dyn_every = max(1, round(settings.dynamics_interval_s * SAMPLE_RATE / CHUNK))
        self._tempo_every = max(1, round(settings.tempo_interval_s * SAMPLE_RATE / CHUNK))
        self._pitch_every = settings.pitch_events_every_chunks
        self._dyn_power_acc = 0.0
        self._dyn_chunks = 0
        self._onset_times: list[float] = []
        self._onset_weights: list[float] = []
        self._pending_notes: list[_PendingNote] = []
        self._attacks: list[_PendingNote] = []
        self._sounding: dict[str, Any] | None = None
        self._sounding_peak = 0.0
        self._next_note_id = 0
        self._noise_buckets: deque[float] = deque([0.0], maxlen=NOISE_BUCKETS)
        self._noise_current = 0.0
        self._noise_count = 0

    # ------------------------------------------------------------------ public
    def process(self, samples: np.ndarray) -> list[Emitted]:
        if self._pending_audio.size:
            samples = np.concatenate([self._pending_audio, samples])
            self._pending_audio = np.zeros(0, dtype=np.float32)
        out: list[Emitted] = []
        n = samples.shape[0]
        start = 0
        while n - start >= CHUNK:
            self._chunk(samples[start : start + CHUNK], out)
            start += CHUNK
        if start < n:
            self._pending_audio = np.array(samples[start:], dtype=np.float32)
        return out

    def finish(self) -> list[Emitted]:
        """End of stream: a trailing partial chunk is analysed zero-padded to a whole chunk."""
        out: list[Emitted] = []
        if self._pending_audio.size:
            padded = np.zeros(CHUNK, dtype=np.float32)
            padded[: self._pending_audio.size] = self._pending_audio
            self._pending_audio = np.zeros(0, dtype=np.float32)
            self._chunk(padded, out)
        return out

    # ---------------------------------------------------------------- internals
    def _chunk(self, chunk: np.ndarray, out: list[Emitted]) -> None:
        hist = self._hist
        hist[:-CHUNK] = hist[CHUNK:]
        hist[-CHUNK:] = chunk
        base_sample = self.samples_seen + CHUNK - HIST_SAMPLES  # absolute index of hist[0]
        self.samples_seen += CHUNK
        self._chunks += 1
        end_s = self.samples_seen / SAMPLE_RATE

        found = onset.onset_chunk(
            hist, CHUNK, onset.HANN, self._prev_log, self._odf_ring, self._onset_st,
            self._out_pos, self._out_strength, self._out_odf,
        )
        chunk_power = dynamics.hop_powers(chunk, onset.HOP_SAMPLES, self._hop_pow)
        f0, conf, win_power = pitch.yin(hist, float(SAMPLE_RATE))

        chunk_start = self.samples_seen - CHUNK
        for att in self._attacks:  # onsets of earlier chunks still in their attack
            self._track_attack(att, chunk_start)
        self._attacks = [a for a in self._attacks if a.hops_seen < dynamics.ATTACK_HOPS]

        for i in range(found):
            pos = int(self._out_pos[i]) + base_sample
            t = pos / SAMPLE_RATE - ONSET_TIME_OFFSET_S
            strength = float(self._out_strength[i])
            out.append(("onset", t, {"strength": round(strength, 3)}))
            pre = min(self._recent_hop_pow) if self._recent_hop_pow else 0.0
            note = _PendingNote(pos, t, strength, pre)
            self._track_attack(note, chunk_start)  # this chunk's hops after the onset count already
            self._attacks.append(note)
            self._pending_notes.append(note)
            self._onset_times.append(t)
            self._onset_weights.append(max(strength, TEMPO_MIN_WEIGHT))
        for h in range(HOPS_PER_CHUNK):
            self._recent_hop_pow.append(float(self._hop_pow[h]))

        level_db = 10.0 * math.log10(win_power + 1e-14)
        gate_db = max(GATE_MIN_DBFS, self._track_noise(level_db) + GATE_ABOVE_NOISE_DB)
        # Clearly periodic frames are voiced down to digital silence (white noise never is); weakly
        # periodic ones only when they stand out of the tracked noise floor.
        voiced = f0 > 0.0 and level_db > GATE_MIN_DBFS and (
            conf >= PITCH_CLEAR_CONFIDENCE or (conf >= PITCH_MIN_CONFIDENCE and level_db > gate_db)
        )
        pitch_t = (self.samples_seen - pitch.WINDOW_SAMPLES / 2) / SAMPLE_RATE
        if voiced and self._chunks % self._pitch_every == 0:
            out.append(("pitch", pitch_t, {
                "f0_hz": round(f0, 2), "midi": round(hz_to_midi(f0), 3), "confidence": round(conf, 3),
            }))

        self._notes(f0 if voiced and conf >= NOTE_MIN_CONFIDENCE else 0.0, conf, level_db, out)

        self._dyn_power_acc += chunk_power
        self._dyn_chunks += 1
        if self._dyn_chunks >= self._dyn_every:
            rms_db = dynamics.power_to_dbfs(self._dyn_power_acc / self._dyn_chunks)
            out.append(("dynamics", end_s, {
                "rms_dbfs": round(rms_db, 2), "velocity": dynamics.dbfs_to_velocity(rms_db),
            }))
            self._dyn_power_acc = 0.0
            self._dyn_chunks = 0

        if (
            self._chunks % self._tempo_every == 0
            and len(self._onset_times) >= tempo.MIN_ONSETS
            and end_s - self._onset_times[-1] <= TEMPO_STALE_S  # nobody is playing: no tempo to report
        ):
            self._trim_onsets(end_s)
            bpm, tconf = tempo.estimate_tempo(
                np.asarray(self._onset_times), np.asarray(self._onset_weights), end_s
            )
            if bpm > 0:
                out.append(("tempo", end_s, {"bpm": round(bpm, 2), "confidence": round(tconf, 3)}))

    def _track_attack(self, note: _PendingNote, chunk_start: int) -> None:
        """Fold this chunk's hops that end after the onset into the note's attack peak power."""
        for h in range(HOPS_PER_CHUNK):
            hop_end = chunk_start + (h + 1) * onset.HOP_SAMPLES
            if hop_end > note.onset_pos and note.hops_seen < dynamics.ATTACK_HOPS:
                note.hops_seen += 1
                note.peak_power = max(note.peak_power, float(self._hop_pow[h]))

    def _track_noise(self, level_db: float) -> float:
        """Noise floor: the quietest chunk of the last few seconds (min over 1 s buckets)."""
        if self._noise_count == 0 or level_db < self._noise_current:
            self._noise_current = level_db
        self._noise_count += 1
        if self._noise_count >= NOISE_BUCKET_CHUNKS:
            self._noise_buckets.append(self._noise_current)
            self._noise_count = 0
        return min(min(self._noise_buckets), self._noise_current)

    def _trim_onsets(self, now_s: float) -> None:
        cutoff = now_s - tempo.WINDOW_S
        k = 0
        while k < len(self._onset_times) and self._onset_times[k] < cutoff:
            k += 1
        if k:
            del self._onset_times[:k]
            del self._onset_weights[:k]

    def _notes(self, f0: float, conf: float, level_db: float, out: list[Emitted]) -> None:
        # end of the sounding note by release
        if self._sounding is not None and level_db < self._sounding_peak - NOTE_RELEASE_DB:
            self._end_note(self.samples_seen / SAMPLE_RATE, out)
        still: list[_PendingNote] = []
        for note in self._pending_notes:
            window_reaches = self.samples_seen - note.onset_pos >= NOTE_SETTLE_SAMPLES
            if not window_reaches:
                still.append(note)
                continue
            note.waited += 1
            if f0 <= 0.0 and note.waited < NOTE_MAX_WAIT_CHUNKS:
                still.append(note)
                continue
            if f0 > 0.0:
                if self._sounding is not None:
                    self._end_note(note.t, out)
                added = max(note.peak_power - note.pre_power, note.peak_power * 0.1)
                level = dynamics.power_to_dbfs(added)
                fields = {
                    "note_id": self._next_note_id,
                    "pitch": int(round(hz_to_midi(f0))),
                    "velocity": dynamics.dbfs_to_velocity(level),
                    "end": None,
                    "confidence": round(conf, 3),
                    "source": "kernel",
                }
                self._next_note_id += 1
                out.append(("note", note.t, fields))
                self._sounding = fields | {"t": note.t}
                self._sounding_peak = dynamics.power_to_dbfs(note.peak_power)
        self._pending_notes = still

    def _end_note(self, end_s: float, out: list[Emitted]) -> None:
        note = self._sounding
        assert note is not None
        self._sounding = None
        t = note.pop("t")
        out.append(("note", t, note | {"end": round(max(end_s, t), 6)}))
