"""One session's recognition: frames → VAD → endpointer → backend stream → events.

Synchronous and single-threaded by contract: the inference pool runs at most one batch of a
session at a time. Wall-clock time is only read to report latencies; segmentation depends on
audio alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from backends.base import ASRStream, Hypothesis, NotifyingStream, Word
from session.endpointer import EndpointConfig, Endpointer, SpeechAudio, SpeechEnd, SpeechStart
from session.events import Event, Final, FinalReason, Partial, SpeechStarted
from session.vad import EnergyVAD

InferenceObserver = Callable[[str, float], None]


class VoiceDetector(Protocol):
    def is_speech(self, frame: np.ndarray) -> bool: ...

    def classify(self, frames: np.ndarray) -> list[bool]: ...


@dataclass(frozen=True, slots=True)
class RecognizerConfig:
    endpoint: EndpointConfig
    vad_threshold: int = 300
    partial_ms: int = 500
    partials: bool = True


class SegmentRecognizer:
    def __init__(
        self,
        stream: ASRStream,
        config: RecognizerConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_inference: InferenceObserver | None = None,
        vad: VoiceDetector | None = None,
    ) -> None:
        self._stream = stream
        # Checked once: a runtime Protocol check costs ~20 µs, too much per partial check.
        self._notifying = isinstance(stream, NotifyingStream)
        self._cfg = config
        self._clock = clock
        self._on_inference = on_inference or (lambda kind, seconds: None)
        self._vad = vad or EnergyVAD(config.vad_threshold)
        self._endpointer = Endpointer(config.endpoint)
        self._frame = config.endpoint.frame_samples
        self._rate = config.endpoint.sample_rate
        self._partial_samples = self._rate * config.partial_ms // 1000
        self._remainder = np.zeros(0, dtype=np.int16)
        self.processed_samples = 0
        self.segment_seq = 1
        self._segment_samples = 0
        self._samples_at_last_partial = 0
        self._last_partial_text = ""
        self._speech_seen_at = 0.0
        self._first_text_at: float | None = None
        self._accept_seconds = 0.0  # backend accept() time of the open segment
        self._closed = False

    @property
    def in_speech(self) -> bool:
        return self._endpointer.in_speech

    def feed(self, pcm: np.ndarray, received_at: float) -> list[Event]:
        """Consume int16 audio; returns speech starts and finals (partials come from
        ``maybe_partial``, once per batch, so a backlog costs one partial, not many)."""
        self.processed_samples += pcm.size
        if self._remainder.size:
            pcm = np.concatenate([self._remainder, pcm])
        whole = pcm.size // self._frame * self._frame
        self._remainder = pcm[whole:]
        if not whole:
            return []
        frames = pcm[:whole].reshape(-1, self._frame)
        events: list[Event] = []
        for frame, voiced in zip(frames, self._vad.classify(frames), strict=True):
            self._apply(self._endpointer.process(frame, voiced), received_at, events)
        return events

    def on_backend_result(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` (from any thread) when the backend finishes a partial on its own."""
        if self._notifying:
            self._stream.set_wake(wake)

    @property
    def partial_due(self) -> bool:
        """In speech, with ``partial_ms`` of new segment audio since the last partial, or a
        partial the backend finished on its own waiting to be collected."""
        return (
            self._cfg.partials
            and self.in_speech
            and (
                self._segment_samples - self._samples_at_last_partial >= self._partial_samples
                or (self._notifying and self._stream.result_ready)
            )
        )

    def maybe_partial(self) -> list[Event]:
        if not self.partial_due:
            return []
        self._samples_at_last_partial = self._segment_samples
        hyp = self._timed("partial", self._stream.partial)
        if hyp is None or hyp.empty or hyp.text == self._last_partial_text:
            return []
        self._last_partial_text = hyp.text
        if self._first_text_at is None:
            self._first_text_at = self._clock()
        start, end = self._endpointer.segment_start, self._endpointer.position
        if hyp.covered_samples is not None:
            end = min(end, start + hyp.covered_samples)
        return [Partial(self.segment_seq, hyp.text, self._ms(start), self._ms(end))]

    def commit(self, received_at: float, reason: FinalReason = FinalReason.COMMIT) -> list[Event]:
        """Finalize the open segment now, including any buffered sub-frame audio."""
        events: list[Event] = []
        if self._remainder.size:
            tail, self._remainder = self._remainder, np.zeros(0, dtype=np.int16)
            voiced = self._vad.is_speech(tail)
            self._apply(self._endpointer.process(tail, voiced), received_at, events)
        self._apply(self._endpointer.force_end(reason), received_at, events)
        return events

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._report_accept_time()
            self._stream.close()

    def _apply(self, actions, received_at: float, events: list[Event]) -> None:
        for action in actions:
            if isinstance(action, SpeechAudio):
                self._segment_samples += action.pcm.size
                t0 = self._clock()
                self._stream.accept(action.pcm)  # streaming decoders (Kaldi) work here
                self._accept_seconds += self._clock() - t0  # reported once per segment
            elif isinstance(action, SpeechStart):
                self._segment_samples = 0
                self._samples_at_last_partial = 0
                self._last_partial_text = ""
                self._speech_seen_at = received_at
                self._first_text_at = None
                events.append(SpeechStarted(self.segment_seq, self._ms(action.start_sample)))
            elif isinstance(action, SpeechEnd):
                events.append(self._final(action, received_at))

    def _report_accept_time(self) -> None:
        if self._accept_seconds:
            self._on_inference("accept", self._accept_seconds)
            self._accept_seconds = 0.0

    def _final(self, end: SpeechEnd, received_at: float) -> Final:
        self._report_accept_time()
        hyp: Hypothesis = self._timed("final", self._stream.finalize)
        now = self._clock()
        if self._first_text_at is None and not hyp.empty:
            self._first_text_at = now
        start = self._endpointer.segment_start
        offset = self._ms(start)
        final = Final(
            segment_seq=self.segment_seq,
            text=hyp.text.strip(),
            start_ms=offset,
            end_ms=self._ms(end.end_sample),
            reason=end.reason,
            words=tuple(
                Word(w.word, w.start_ms + offset, w.end_ms + offset, w.confidence)
                for w in hyp.words
            ),
            confidence=hyp.confidence,
            language=hyp.language,
            alternatives=hyp.alternatives,
            first_token_ms=(
                None
                if self._first_text_at is None
                else max(0, round((self._first_text_at - self._speech_seen_at) * 1000))
            ),
            latency_ms=max(0, round((now - received_at) * 1000)),
            segment_duration_ms=self._ms(end.end_sample - start),
        )
        self.segment_seq += 1
        return final

    def _timed(self, kind: str, call):
        t0 = self._clock()
        try:
            return call()
        finally:
            self._on_inference(kind, self._clock() - t0)

    def _ms(self, samples: int) -> int:
        return samples * 1000 // self._rate
