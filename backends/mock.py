"""Deterministic fixture replay: a test tool for CI and load tests, never the product.

The mock recognises which reference clip a segment was cut from by matching its samples,
then "transcribes" it from the clip's reference text. Words are spread evenly over the voiced
frames of their utterance, so partials reveal a prefix of the words in proportion to the audio
received and the final returns every word whose centre lies inside the segment. Audio that
matches no fixture transcribes to nothing, as silence should.

With ``tolerant`` on, a segment whose samples match nowhere (it went through a lossy codec or
a resampler) is located by its energy envelope instead: the 10 ms log-energy curve of its
first seconds, cross-correlated with every clip's. That costs about a millisecond per try, so
load tests leave it off.
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
_KEY = 4  # samples packed into one index key
_HEAD = 32000  # a segment is located from its first 2 s at most
_VOICED_RMS = 300  # frames above this carry words
_FRAME = 320  # 20 ms at 16 kHz
_ENV_FRAME = 160  # 10 ms: the envelope's resolution
_ENV_MIN = 100  # envelope frames (1 s) before a tolerant match is tried
_ENV_MATCH = 0.95  # normalised correlation that counts as the same audio
_ENV_LEAD = 50  # frames of quiet before each clip: codec priming delays audio a little


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
    rms = np.sqrt((frames * frames).mean(axis=1))
    # Quiet recordings carry words too: scale the voicing level down to the clip's loudness.
    voiced = rms > min(_VOICED_RMS, 0.2 * float(rms.max(initial=0.0)))
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

    def __init__(self, fixtures_dir: Path, delay_ms: float = 0.0, sample_rate: int = 16000,
                 tolerant: bool = False):
        self.model = f"fixtures:{fixtures_dir.name}"
        self.capabilities = Capabilities(
            partials=True, words=True, n_best=False, languages=("*",), sample_rate=sample_rate
        )
        self._dir = fixtures_dir
        self._delay = delay_ms / 1000.0
        self._rate = sample_rate
        self._clips: list[_Clip] = []
        self._tolerant = tolerant
        self._envelopes: list[np.ndarray] = []
        self._open = 0
        self._lock = threading.Lock()

    def load(self) -> None:
        self._clips = [
            _Clip(f, pcm, _spread_words(pcm, f, self._rate))
            for f in load_fixtures(self._dir)
            for pcm in [f.pcm()]
        ]
        # Every position of every clip, sorted by the 4 samples starting there: locating a
        # segment is a binary search, whatever the clip count or the audio streamed.
        keys, owners, offsets = [], [], []
        for n, clip in enumerate(self._clips):
            if clip.pcm.size < _PROBE:
                continue
            keys.append(_keys(clip.pcm[: clip.pcm.size - _PROBE + _KEY]))
            owners.append(np.full(keys[-1].size, n, dtype=np.int32))
            offsets.append(np.arange(keys[-1].size, dtype=np.int32))
        all_keys = np.concatenate(keys) if keys else np.zeros(0, dtype=np.uint64)
        order = np.argsort(all_keys, kind="stable")
        self._keys = all_keys[order]
        self._owners = np.concatenate(owners)[order] if keys else np.zeros(0, np.int32)
        self._offsets = np.concatenate(offsets)[order] if keys else np.zeros(0, np.int32)
        if self._tolerant:
            self._envelopes = [
                np.concatenate([np.full(_ENV_LEAD, env.min(initial=0.0)), env])
                for clip in self._clips for env in [_envelope(clip.pcm)]
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

    def locate(self, head: np.ndarray) -> tuple[_Clip, int] | None:
        """(clip, sample offset of head[0] in the clip), or None if no clip matches."""
        if head.size < _PROBE:
            return None
        loud = np.abs(head[: head.size - _PROBE + 1].astype(np.int32))
        at = int(np.argmax(loud))  # a loud sample: its key is rare, the match unambiguous
        if loud[at] == 0:
            return None
        probe = head[at : at + _PROBE]
        key = _keys(probe[:_KEY])[0]
        lo, hi = np.searchsorted(self._keys, [key, key + np.uint64(1)])
        for idx in range(lo, min(hi, lo + 16)):
            clip = self._clips[self._owners[idx]]
            start = int(self._offsets[idx])
            if np.array_equal(clip.pcm[start : start + _PROBE], probe):
                return clip, start - at
        return self._locate_envelope(head) if self._tolerant else None

    def _locate_envelope(self, head: np.ndarray) -> tuple[_Clip, int] | None:
        h = _envelope(head)
        if h.size < _ENV_MIN:
            return None
        h = h - h.mean()
        norm = float(np.sqrt((h * h).sum()))
        if norm < 1.0:
            return None  # flat: silence or steady noise matches anything
        best = (_ENV_MATCH, None, 0)
        m = h.size
        for clip, env in zip(self._clips, self._envelopes, strict=True):
            if env.size < m:
                continue
            num = np.correlate(env, h, mode="valid")
            c1 = np.concatenate([[0.0], np.cumsum(env)])
            c2 = np.concatenate([[0.0], np.cumsum(env * env)])
            s1, s2 = c1[m:] - c1[:-m], c2[m:] - c2[:-m]
            r = num / (np.sqrt(np.maximum(s2 - s1 * s1 / m, 1e-9)) * norm)
            lag = int(np.argmax(r))
            if r[lag] > best[0]:
                best = (float(r[lag]), clip, lag)
        _, clip, lag = best
        return None if clip is None else (clip, (lag - _ENV_LEAD) * _ENV_FRAME)

    def simulate_compute(self) -> None:
        if self._delay:
            time.sleep(self._delay)


class MockStream:
    """Keeps only the segment's first seconds (to locate it) and a sample count."""

    def __init__(self, backend: MockBackend, options: StreamOptions) -> None:
        self._backend = backend
        self._rate = options.sample_rate
        self._head: list[np.ndarray] = []
        self._head_samples = 0
        self._samples = 0
        self._match: tuple[_Clip, int] | None = None
        self._tried_at = 0
        self._closed = False

    def accept(self, pcm: np.ndarray) -> None:
        if self._head_samples < _HEAD:
            self._head.append(pcm)
            self._head_samples += pcm.size
        self._samples += pcm.size

    def partial(self) -> Hypothesis | None:
        self._backend.simulate_compute()
        words = self._words()
        if not words:
            return None
        # The fixture's words are the truth, so the final keeps them all; the last one is
        # left unsettled, as a real decoder's word at the audio's edge would be.
        return Hypothesis(" ".join(w.word for w in words),
                          stable_chars=len(" ".join(w.word for w in words[:-1])))

    def finalize(self) -> Hypothesis:
        self._backend.simulate_compute()
        words = self._words()
        self._head, self._head_samples, self._samples = [], 0, 0
        self._match, self._tried_at = None, 0
        if not words:
            return EMPTY
        return Hypothesis(" ".join(w.word for w in words), words=words, confidence=1.0)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._head = []
            self._backend._stream_closed()

    def _words(self) -> tuple[Word, ...]:
        # Retry only while the head grows, so unknown audio costs a few searches per segment.
        if self._match is None and self._head_samples > self._tried_at:
            self._tried_at = self._head_samples
            head = np.concatenate(self._head)[:_HEAD]
            self._head = [head]
            self._match = self._backend.locate(head)
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


def _envelope(pcm: np.ndarray) -> np.ndarray:
    """Log energy per 10 ms frame of the 0–4 kHz band (what survives 8 kHz telephony)."""
    import soxr

    band = soxr.resample(pcm.astype(np.float32), 16000, 8000)
    step = _ENV_FRAME // 2
    frames = band[: band.size // step * step].reshape(-1, step)
    energy = (frames.astype(np.float64) ** 2).mean(axis=1)
    return np.log10(energy + 1.0)


def _keys(pcm: np.ndarray) -> np.ndarray:
    """uint64 key of the ``_KEY`` samples starting at each position of ``pcm``."""
    u = pcm.astype(np.uint16).astype(np.uint64)
    n = u.size - _KEY + 1
    return (u[:n] << np.uint64(48)) | (u[1 : n + 1] << np.uint64(32)) | (
        u[2 : n + 2] << np.uint64(16)) | u[3 : n + 3]
