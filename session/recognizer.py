"""One session's recognition: frames → VAD → endpointer → backend stream → events.

Synchronous and single-threaded by contract: the inference pool runs at most one batch of a
session at a time. Wall-clock time is only read to report latencies; segmentation depends on
audio alone.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from backends.base import (
    ASRStream,
    BackendError,
    Hypothesis,
    NotifyingStream,
    PreparingStream,
    Word,
)
from session.endpointer import EndpointConfig, Endpointer, SpeechAudio, SpeechEnd, SpeechStart
from session.events import Event, Final, FinalReason, Partial, SpeechStarted, SpeechStopped
from session.options import RecognitionOptions
from session.overlap import Seam, merge_text, said_until, trim_text
from session.text import Text, TextStage, clamp_stable, stage_for
from session.turns import TurnConfig, TurnDetector
from session.vad import EnergyVAD

InferenceObserver = Callable[[str, float], None]
# A max_segment final whose last word ends this long before its cut stopped short; the next
# segment is reopened this much before that word's end (word ends are the aligner's guess).
SHORT_FINAL_MS = 500
REACH_MARGIN_MS = 300


class VoiceDetector(Protocol):
    def is_speech(self, frame: np.ndarray) -> bool: ...

    def classify(self, frames: np.ndarray) -> list[bool]: ...


@dataclass(frozen=True, slots=True)
class RecognizerConfig:
    endpoint: EndpointConfig
    vad_threshold: int = 300
    partial_ms: int = 500
    partials: bool = True
    # Decode the final (a backend that can) this long before the endpoint would come, so it
    # is ready when it does; never sooner than ``early_final_min_ms`` into a pause (a
    # shorter one is more often a breath than an end). None: at the endpoint.
    early_final_lead_ms: int | None = None
    early_final_min_ms: int = 200


class Setup(Protocol):
    """Turns a session's options into its parts; lets a live session be reconfigured (the
    loaded model stays apart: ``open_stream`` only opens a cheap per-session stream)."""

    def recognizer_config(self, options: RecognitionOptions) -> RecognizerConfig: ...

    def voice_detector(self, options: RecognitionOptions) -> VoiceDetector | None: ...

    def open_stream(self, options: RecognitionOptions) -> ASRStream: ...


class SegmentRecognizer:
    def __init__(
        self,
        stream: ASRStream,
        config: RecognizerConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_inference: InferenceObserver | None = None,
        on_early_final: Callable[[bool], None] | None = None,
        vad: VoiceDetector | None = None,
        setup: Setup | None = None,
        options: RecognitionOptions | None = None,
        text_stage: TextStage | None = None,
    ) -> None:
        self._stream = stream
        self._setup = setup
        self.options = options or RecognitionOptions()
        self._pending: RecognitionOptions | None = None  # stream options for the next segment
        # Rewrites hypotheses before they become events (numbers as digits, …).
        self._fixed_text_stage = text_stage is not None
        self._text = text_stage or stage_for(self.options)
        # Set by the job: events that must not wait for the rest of a batch (speech stopped
        # goes out before the slow final of its segment).
        self.early: Callable[[Event], None] | None = None
        self._wake: Callable[[], None] | None = None
        # Checked once: a runtime Protocol check costs ~20 µs, too much per partial check.
        self._notifying = isinstance(stream, NotifyingStream)
        self._preparing = isinstance(stream, PreparingStream)
        # The last voiced sample when the final was decoded ahead: it stands while no voiced
        # frame comes after. None: none prepared.
        self._prepared_at: int | None = None
        self._on_early_final = on_early_final or (lambda used: None)
        # Whether a final may be decoded ahead now: the server says no while live work waits
        # for a thread (a guess must not delay what is due), and for uploads (nobody waits).
        self.may_prepare: Callable[[], bool] = lambda: True
        self._cfg = config
        self._clock = clock
        self._on_inference = on_inference or (lambda kind, seconds: None)
        self._vad = vad or EnergyVAD(config.vad_threshold)
        self._endpointer = Endpointer(config.endpoint)
        self._turns = TurnDetector(TurnConfig.of(self.options))
        self._frame = config.endpoint.frame_samples
        self._rate = config.endpoint.sample_rate
        self._set_cadence(config)
        self._remainder = np.zeros(0, dtype=np.int16)
        self.processed_samples = 0
        self.samples_since_commit = 0
        self.segment_seq = 1
        self._segment_samples = 0
        # The open segment's first sample, and where its events say it starts: a segment
        # that replays audio from before a max_segment cut starts, for the client, at the cut.
        self._segment_start = 0
        self._shown_start = 0
        # The previous final's words when this segment replays its last audio (or will).
        self._seam: Seam | None = None
        self._replay_from: int | None = None
        self._seam_cut = 0
        self._final_words: tuple[Word, ...] = ()  # the last final's, before the text stage
        self._samples_at_last_partial = 0
        self._last_partial: tuple[str, int] = ("", 0)
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
        self.samples_since_commit += pcm.size
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
        turn = self._turns.advance(self._ms(self._endpointer.position), self.in_speech)
        if turn is not None:
            events.append(turn)
        self._prepare_final()
        return events

    def on_backend_result(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` (from any thread) when the backend finishes a partial on its own."""
        self._wake = wake
        if self._notifying:
            self._stream.set_wake(wake)

    @property
    def partial_due(self) -> bool:
        """In speech, with ``partial_ms`` of new segment audio since the last partial, or a
        partial the backend finished on its own waiting to be collected."""
        return (
            self._cfg.partials
            and self.in_speech
            and self._prepared_at is None  # the pause is long enough: the final is decoded
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
        if hyp is None or hyp.empty or (hyp.text, hyp.stable_chars) == self._last_partial:
            return []
        self._last_partial = (hyp.text, hyp.stable_chars)
        said, stable = hyp.text, hyp.stable_chars
        if self._seam is not None:  # words the previous final already gave are not repeated
            said, removed = trim_text(self._seam, said)
            stable = max(0, stable - removed)
            if not said.strip():
                return []
        text = clamp_stable(self._text(Text(said, stable_chars=stable), final=False))
        if self._first_text_at is None:
            self._first_text_at = self._clock()
        end = self._endpointer.position
        if hyp.covered_samples is not None:
            end = min(end, self._segment_start + hyp.covered_samples)
        return [Partial(self.segment_seq, text.text, self._ms(self._shown_start),
                        self._ms(max(end, self._shown_start)), stable_chars=text.stable_chars)]

    def commit(self, received_at: float, reason: FinalReason = FinalReason.COMMIT) -> list[Event]:
        """Finalize the open segment now, including any buffered sub-frame audio."""
        events: list[Event] = []
        if self._remainder.size:
            tail, self._remainder = self._remainder, np.zeros(0, dtype=np.int16)
            voiced = self._vad.is_speech(tail)
            self._apply(self._endpointer.process(tail, voiced), received_at, events)
        self._apply(self._endpointer.force_end(reason), received_at, events)
        self.samples_since_commit = 0
        return events

    def reconfigure(self, options: RecognitionOptions) -> None:
        """Apply new options from the next frame on. Segmentation and detection change at
        once; a new language or hotword list reopens the backend stream, at once in silence or
        after the open segment's final (its audio was heard under the old options)."""
        if self._setup is None:
            raise RuntimeError("this recognizer was built without a setup: it cannot change")
        old, self.options = self.options, options
        self._cfg = self._setup.recognizer_config(options)
        self._endpointer.reconfigure(self._cfg.endpoint)
        self._turns.config = TurnConfig.of(options)
        if not self._fixed_text_stage:
            self._text = stage_for(options)
        self._set_cadence(self._cfg)
        if (old.vad, old.vad_threshold, old.vad_level) != (
                options.vad, options.vad_threshold, options.vad_level):
            self._vad = self._setup.voice_detector(options) or EnergyVAD(self._cfg.vad_threshold)
        if old.stream_key() != options.stream_key():
            self._pending = options
            if not self.in_speech:
                self._reopen()

    def clear(self) -> None:
        """Forget the open segment and any audio not yet in one (OpenAI's buffer clear)."""
        self._remainder = np.zeros(0, dtype=np.int16)
        self.samples_since_commit = 0
        self._turns.clear()
        self._seam = None
        self._drop_prepared()
        if self._endpointer.clear() and self._setup is not None:
            self._pending = self._pending or self.options
        if self._pending is not None:
            self._reopen()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._report_accept_time()
            self._stream.close()

    def _reopen(self) -> None:
        options, self._pending = self._pending, None
        self._report_accept_time()
        self._drop_prepared()
        old, self._stream = self._stream, self._setup.open_stream(options)
        self._notifying = isinstance(self._stream, NotifyingStream)
        self._preparing = isinstance(self._stream, PreparingStream)
        if self._notifying and self._wake is not None:
            self._stream.set_wake(self._wake)
        old.close()

    def _apply(self, actions, received_at: float, events: list[Event]) -> None:
        queue = deque(actions)
        while queue:
            action = queue.popleft()
            if isinstance(action, SpeechAudio):
                self._segment_samples += action.pcm.size
                t0 = self._clock()
                self._stream.accept(action.pcm)  # streaming decoders (Kaldi) work here
                self._accept_seconds += self._clock() - t0  # reported once per segment
            elif isinstance(action, SpeechStart):
                self._open_segment(action.start_sample)
                self._segment_samples = 0
                self._samples_at_last_partial = 0
                self._last_partial = ("", 0)
                self._speech_seen_at = received_at
                self._first_text_at = None
                events.append(SpeechStarted(self.segment_seq, self._ms(self._shown_start)))
            elif isinstance(action, SpeechEnd):
                self.samples_since_commit = 0  # the segment commits what came before it
                stopped = SpeechStopped(self.segment_seq, self._ms(action.end_sample))
                if self.early is None:
                    events.append(stopped)
                else:  # everything before it, then it, ahead of the final
                    for event in events:
                        self.early(event)
                    events.clear()
                    self.early(stopped)
                events.append(self._final(action, received_at))
                if self._pending is not None:
                    self._reopen()
                earlier = self._reach_back(action)
                if earlier:  # in place of the replay the endpointer opened (if it did)
                    queue = deque(earlier)

    def _set_cadence(self, config: RecognizerConfig) -> None:
        self._partial_samples = self._rate * config.partial_ms // 1000
        lead, end = config.early_final_lead_ms, config.endpoint.silence_ms
        at = None if not lead or end is None else max(end - lead, config.early_final_min_ms)
        self._early_frames = config.endpoint.frames(at) if at is not None and at < end else None

    def _prepare_final(self) -> None:
        """Once per batch: decode the final ahead when the pause has gone on long enough,
        or drop the one decoded when speech came back since. A batch that reaches the
        endpoint itself decoded the final as usual; one that ends in speech prepares nothing."""
        ep = self._endpointer
        if self._prepared_at is not None and (
                not ep.in_speech or ep.last_voiced_end != self._prepared_at):
            self._drop_prepared()
        if (self._early_frames is None or not self._preparing or self._prepared_at is not None
                or not ep.in_speech or ep.holding or ep.silence_frames < self._early_frames
                or not self.may_prepare()):
            return
        try:
            self._timed("early_final", self._stream.prepare_final)
        except BackendError:
            return  # the final decodes at the endpoint, and reports its error there
        self._prepared_at = ep.last_voiced_end

    def _drop_prepared(self) -> None:
        if self._prepared_at is not None:
            self._prepared_at = None
            self._stream.forget_prepared()
            self._on_early_final(False)

    def _take_prepared(self, end: SpeechEnd) -> None:
        """At the segment's end: keep the final decoded ahead only for an endpoint with no
        speech since it (a commit or a cut decodes what it was given)."""
        if self._prepared_at is None:
            return
        if end.reason is FinalReason.ENDPOINT and end.end_sample == self._prepared_at:
            self._prepared_at = None
            self._on_early_final(True)
        else:
            self._drop_prepared()

    def _open_segment(self, start: int) -> None:
        self._segment_start = self._shown_start = start
        if self._seam is not None and start == self._replay_from:
            self._shown_start = max(start, self._seam_cut)  # the replay began before the cut
        else:
            self._seam = None

    def _report_accept_time(self) -> None:
        if self._accept_seconds:
            self._on_inference("accept", self._accept_seconds)
            self._accept_seconds = 0.0

    def _final(self, end: SpeechEnd, received_at: float) -> Final:
        self._report_accept_time()
        self._take_prepared(end)
        try:
            hyp: Hypothesis = self._timed("final", self._stream.finalize)
        except BackendError as exc:
            exc.segment_seq = self.segment_seq  # the job reports which segment failed
            raise
        now = self._clock()
        if self._first_text_at is None and not hyp.empty:
            self._first_text_at = now
        offset = self._ms(self._segment_start)
        said = hyp.text.strip()
        words = tuple(Word(w.word, w.start_ms + offset, w.end_ms + offset, w.confidence)
                      for w in hyp.words)
        # A replayed segment starts at the cut: segments never overlap in time (its first
        # word's own start is no guide: a decoder stamps it from the audio's start).
        start_ms = self._ms(self._shown_start)
        if self._seam is not None:  # merged on the backend's words, before the text stage
            said, words = merge_text(self._seam, said, words)
        self._carry_over(end, words)
        text = self._text(Text(said, words), final=True)
        end_ms = self._ms(end.end_sample)
        final = Final(
            segment_seq=self.segment_seq,
            text=text.text,
            start_ms=start_ms,
            end_ms=end_ms,
            reason=end.reason,
            words=text.words,
            confidence=hyp.confidence,
            language=hyp.language,
            alternatives=hyp.alternatives,
            first_token_ms=(
                None
                if self._first_text_at is None
                else max(0, round((self._first_text_at - self._speech_seen_at) * 1000))
            ),
            latency_ms=max(0, round((now - received_at) * 1000)),
            segment_duration_ms=max(0, end_ms - start_ms),
            end_confidence=hyp.end_confidence,
        )
        self.segment_seq += 1
        self._turns.on_final(final)
        return final

    def _carry_over(self, end: SpeechEnd, words: tuple[Word, ...]) -> None:
        """Keep this final's words for the next segment when it replays audio from before
        this one's end (a max_segment cut away from a pause)."""
        self._final_words = words
        if end.replay_from is None or end.replay_from >= end.end_sample:
            self._seam = None
            return
        self._seam_at(end, end.replay_from, words)

    def _seam_at(self, end: SpeechEnd, replay_from: int, words: tuple[Word, ...]) -> None:
        kept = words or (self._seam.words if self._seam is not None else ())
        self._seam = Seam(kept, self._ms(replay_from), self._ms(end.end_sample))
        self._replay_from, self._seam_cut = replay_from, end.end_sample

    def _reach_back(self, end: SpeechEnd) -> list:
        """A max_segment final whose words stop well before its cut (a decoder may leave out
        a long segment's last seconds): reopen the next segment from where they stop, so it
        hears that speech again; the merge drops what the final did say."""
        words = self._final_words
        if end.reason is not FinalReason.MAX_SEGMENT or not words:
            return []
        said = said_until(words[-1])
        if self._ms(end.end_sample) - said <= SHORT_FINAL_MS:
            return []
        start = (said - REACH_MARGIN_MS) * self._rate // 1000
        actions = self._endpointer.reach_back(max(0, start))
        if actions:
            self._seam_at(end, actions[0].start_sample, words)
        return actions

    def _timed(self, kind: str, call):
        t0 = self._clock()
        try:
            return call()
        finally:
            self._on_inference(kind, self._clock() - t0)

    def _ms(self, samples: int) -> int:
        return samples * 1000 // self._rate
