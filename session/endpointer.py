"""Segmentation of a frame stream into speech segments: a pure, clock-free state machine.

Time advances only through the frames fed in; every position is a sample index of session
audio. The endpointer never drops audio it was given during speech: pre-roll frames are
replayed at speech start so the first word is not clipped.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from session.events import FinalReason


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    sample_rate: int = 16000
    frame_ms: int = 20
    speech_start_ms: int = 60  # voiced run that opens a segment
    silence_ms: int | None = 500  # unvoiced run that closes it; None: only a commit does
    preroll_ms: int = 300  # audio kept from before the voiced run
    max_segment_ms: int = 30000  # force a final this long into a segment

    @property
    def frame_samples(self) -> int:
        return self.sample_rate * self.frame_ms // 1000

    def frames(self, ms: int) -> int:
        return max(1, -(-ms // self.frame_ms))


@dataclass(frozen=True, slots=True)
class SpeechStart:
    start_sample: int


@dataclass(frozen=True, slots=True)
class SpeechAudio:
    pcm: np.ndarray


@dataclass(frozen=True, slots=True)
class SpeechEnd:
    end_sample: int  # end of the last voiced frame (or of all audio for a forced end)
    reason: FinalReason


Action = SpeechStart | SpeechAudio | SpeechEnd


class Endpointer:
    def __init__(self, config: EndpointConfig) -> None:
        self._ring: deque[tuple[int, np.ndarray]] = deque()
        self.reconfigure(config)
        self._position = 0
        self._in_speech = False
        self._voiced_run = 0
        self._silence_run = 0
        self._segment_start = 0
        self._last_voiced_end = 0

    def reconfigure(self, config: EndpointConfig) -> None:
        """New thresholds from the next frame on; the open segment (if any) stays open."""
        if config.frame_ms != getattr(self, "_cfg", config).frame_ms:
            raise ValueError("the frame size of a running endpointer cannot change")
        self._cfg = config
        self._start_frames = config.frames(config.speech_start_ms)
        self._end_frames = (float("inf") if config.silence_ms is None
                            else config.frames(config.silence_ms))
        self._max_samples = config.sample_rate * config.max_segment_ms // 1000
        preroll = config.preroll_ms // config.frame_ms if config.preroll_ms else 0
        self._ring = deque(self._ring, maxlen=preroll + self._start_frames)

    def clear(self) -> bool:
        """Forget the open segment and the pre-roll; returns whether a segment was open."""
        was_open = self._in_speech
        self._ring.clear()
        self._in_speech = False
        self._voiced_run = 0
        self._silence_run = 0
        return was_open

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def position(self) -> int:
        """Samples consumed so far."""
        return self._position

    @property
    def segment_start(self) -> int:
        return self._segment_start

    def process(self, frame: np.ndarray, is_speech: bool) -> list[Action]:
        start = self._position
        self._position += frame.size
        if not self._in_speech:
            return self._process_silence(start, frame, is_speech)
        return self._process_speech(start, frame, is_speech)

    def force_end(self, reason: FinalReason) -> list[Action]:
        """Close the open segment now (commit, end of stream). Nothing happens in silence."""
        if not self._in_speech:
            return []
        return [self._end(self._position, reason)]

    def _process_silence(self, start: int, frame: np.ndarray, is_speech: bool) -> list[Action]:
        self._ring.append((start, frame))
        self._voiced_run = self._voiced_run + 1 if is_speech else 0
        if self._voiced_run < self._start_frames:
            return []
        first_sample = self._ring[0][0]
        audio = np.concatenate([f for _, f in self._ring])
        self._ring.clear()
        self._in_speech = True
        self._segment_start = first_sample
        self._silence_run = 0
        self._last_voiced_end = self._position
        return [SpeechStart(first_sample), SpeechAudio(audio)]

    def _process_speech(self, start: int, frame: np.ndarray, is_speech: bool) -> list[Action]:
        actions: list[Action] = [SpeechAudio(frame)]
        if is_speech:
            self._silence_run = 0
            self._last_voiced_end = self._position
        else:
            self._silence_run += 1
        if self._silence_run >= self._end_frames:
            actions.append(self._end(self._last_voiced_end, FinalReason.ENDPOINT))
        elif self._position - self._segment_start >= self._max_samples:
            actions.append(self._end(self._position, FinalReason.MAX_SEGMENT))
            # Speech that runs on reopens a segment on the very next voiced frame.
            self._voiced_run = self._start_frames - 1 if is_speech else 0
        return actions

    def _end(self, end_sample: int, reason: FinalReason) -> SpeechEnd:
        self._in_speech = False
        self._voiced_run = 0
        self._silence_run = 0
        return SpeechEnd(end_sample, reason)
