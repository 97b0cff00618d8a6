"""Deterministic fixture replay: a test tool for CI and load tests, never the product.

The mock recognises which reference clip a segment was cut from by matching its samples,
then "transcribes" it from the clip's reference text. Words are spread evenly over the voiced
frames of their utterance, so partials reveal a prefix of the words in proportion to the audio
received and the final returns every word whose centre lies inside the segment. Audio that
matches no fixture transcribes to nothing, as silence should.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backends.base import EMPTY, Capabilities, Hypothesis, StreamOptions, Word
from backends.fixtures import Fixture, load_fixtures

_PROBE = 64  # samples matched to locate a segment inside a fixture
_VOICED_RMS = 300  # frames above this carry words
_FRAME = 320  # 20 ms at 16 kHz


@dataclass(frozen=True, slots=True)
class _TimedWord:
    text: str
    start: int  # fixture samples
    end: int

    @property
    def centre(self) -> int:
        return (self.start + self.end) // 2


@dataclass(frozen=True, slots=True)
class _Clip:
    fixture: Fixture
    pcm: np.ndarray
    words: tuple[_TimedWord, ...]


def _spread_words(pcm: np.ndarray, fixture: Fixture, rate: int) -> tuple[_TimedWord, ...]:
    frames = pcm[: pcm.size // _FRAME * _FRAME].reshape(-1, _FRAME).astype(np.float32)
    voiced = np.sqrt((frames * frames).mean(axis=1)) > _VOICED_RMS
    words: list[_TimedWord] = []
    for utt in fixture.utterances:
        tokens = utt.text.split()
        first, last = int(utt.start_s * rate) // _FRAME, int(utt.end_s * rate) // _FRAME
        idx = np.flatnonzero(voiced[first:last]) + first
        if not tokens or idx.size == 0:
            continue
        # Word i owns an equal share of the utterance's voiced frames.
        bounds = np.linspace(0, idx.size, len(tokens) + 1).astype(int)
        for tok, a, b in zip(tokens, bounds[:-1], bounds[1:], strict=True):
            span = idx[a : max(a + 1, b)]
            words.append(_TimedWord(tok, int(span[0]) * _FRAME, (int(span[-1]) + 1) * _FRAME))
    return tuple(words)


class MockBackend:
    name = "mock"

    def __init__(self, fixtures_dir: Path, delay_ms: float = 0.0, sample_rate: int = 16000):
        self.model = f"fixtures:{fixtures_dir.name}"
        self.capabilities = Capabilities(
            partials=True, words=True, n_best=False, languages=("*",), sample_rate=sample_rate
        )
        self._dir = fixtures_dir
        self._delay = delay_ms / 1000.0
        self._rate = sample_rate
        self._clips: list[_Clip] = []
        self._open = 0
        self._lock = threading.Lock()

    def load(self) -> None:
        self._clips = [
            _Clip(f, pcm, _spread_words(pcm, f, self._rate))
            for f in load_fixtures(self._dir)
            for pcm in [f.pcm()]
        ]

    def open_stream(self, options: StreamOptions) -> MockStream:
        with self._lock:
            self._open += 1
        return MockStream(self, options)

    @property
    def open_streams(self) -> int:
        return self._open

    def close(self) -> None:
        self._clips = []

    def _stream_closed(self) -> None:
        with self._lock:
            self._open -= 1

    def locate(self, segment: np.ndarray) -> tuple[_Clip, int] | None:
        """(clip, sample offset of segment[0] in the clip), or None if no clip matches."""
        head = np.abs(segment[: segment.size - _PROBE].astype(np.int32))
        # Anchor on the loudest sample: a rare value has few candidate positions.
        at = int(np.argmax(head)) if head.size else 0
        if head.size == 0 or head[at] == 0:
            return None
        probe = segment[at : at + _PROBE]
        for clip in self._clips:
            candidates = np.flatnonzero(clip.pcm[: clip.pcm.size - _PROBE + 1] == probe[0])
            if candidates.size == 0:
                continue
            windows = clip.pcm[candidates[:, None] + np.arange(_PROBE)]
            hits = candidates[(windows == probe).all(axis=1)]
            if hits.size:
                return clip, int(hits[0]) - at
        return None

    def simulate_compute(self) -> None:
        if self._delay:
            time.sleep(self._delay)


class MockStream:
    def __init__(self, backend: MockBackend, options: StreamOptions) -> None:
        self._backend = backend
        self._rate = options.sample_rate
        self._chunks: list[np.ndarray] = []
        self._samples = 0
        self._match: tuple[_Clip, int] | None = None
        self._searched_at = 0
        self._closed = False

    def accept(self, pcm: np.ndarray) -> None:
        self._chunks.append(pcm)
        self._samples += pcm.size

    def partial(self) -> Hypothesis | None:
        self._backend.simulate_compute()
        words = self._words(final=False)
        return Hypothesis(" ".join(w.word for w in words)) if words else None

    def finalize(self) -> Hypothesis:
        self._backend.simulate_compute()
        words = self._words(final=True)
        self._chunks, self._samples, self._match, self._searched_at = [], 0, None, 0
        if not words:
            return EMPTY
        return Hypothesis(" ".join(w.word for w in words), words=words, confidence=1.0)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._chunks = []
            self._backend._stream_closed()

    def _words(self, final: bool) -> tuple[Word, ...]:
        if self._match is None and self._samples >= self._searched_at + _PROBE:
            self._searched_at = self._samples
            self._match = self._backend.locate(np.concatenate(self._chunks))
        if self._match is None:
            return ()
        clip, offset = self._match
        end = offset + self._samples
        ms = 1000 / self._rate
        return tuple(
            Word(w.text, max(0, round((w.start - offset) * ms)), round((w.end - offset) * ms), 1.0)
            for w in clip.words
            if offset <= w.centre < end
        )
