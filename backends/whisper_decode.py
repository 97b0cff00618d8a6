"""The two Whisper decodes the streaming policy needs, on CTranslate2 directly.

Whisper is trained on 30 s windows and faster-whisper pads every decode to one, so a 3 s
segment pays for a 30 s encoder pass. Both decodes here encode a shorter window instead:

- ``decode_final`` pads the segment with silence to ``max(segment + 4 s, 10 s)``. With the
  trailing silence the decoder sees the speech end, as it does in training; without it (or with
  less than ~3 s) it invents and repeats words after the last real one. Measured on the natural
  English clips of ``../shared/eval`` (VAD-cut segments, tiny.en, beam 1): 7.35 % WER at 0.23 s
  per segment, against 7.77 % at 0.65 s for the padded 30 s decode (docs/benchmarks.md). An
  8 s floor saves 12 % of the decode and scores the same on those segments, but streamed
  (the server's own segments) it cost 0.8 WER points (7.23 → 8.05 %), so the floor stays.
  Output is capped by duration and text stamped after the audio's end is dropped.
- ``decode_partial`` encodes the bare audio it is given (cheapest; its unstable tail is hidden
  by the caller's agreement between consecutive partials), and can say where its words end,
  so the caller can keep that audio short by cutting it after words it has settled.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from backends.base import EMPTY, Hypothesis, Word

RATE = 16000
_HOP = 160  # samples per mel frame
_WINDOW_S = 30.0  # Whisper's trained context; the encoder takes no more
_WINDOW_FRAMES = int(_WINDOW_S * RATE) // _HOP
_FINAL_TAIL_S = 4.0  # silence after the segment so the decoder sees speech end
_FINAL_MIN_WINDOW_S = 10.0  # shorter windows decode worse (8 s: +0.8 WER points streamed)
_FINAL_TOKENS_PER_SECOND = 8  # text and timestamp tokens: generous for speech, short for loops
_PARTIAL_TOKENS_PER_SECOND = 5
_TIMESTAMP_STEP_S = 0.02
_PREPEND = "\"'“¿([{-"
_APPEND = "\"'.。,，!！?？:：”)]}、"
_TERMINAL = frozenset(".。!！?？")


@dataclass(frozen=True, slots=True)
class Guards:
    no_speech_threshold: float
    log_prob_threshold: float
    compression_ratio_threshold: float


class Prompts:
    """One stream's tokenizers and decoder prompts, built once per language (``language``
    None: detect it per decode, multilingual models only)."""

    def __init__(self, model, language: str | None, hotwords: str | None,
                 context: str = "") -> None:
        self._model = model
        self._multilingual = model.model.is_multilingual
        self.language = language if self._multilingual else "en"
        self._hotwords = hotwords
        self._context = context.strip()  # earlier text: the decoder's previous tokens
        self._cache: dict[tuple[str, bool], tuple[object, list[int]]] = {}

    def resolve(self, encoded) -> str:
        if self.language:
            return self.language
        token = self._model.model.detect_language(encoded)[0][0][0]  # "<|de|>"
        return token[2:-2]

    def get(self, language: str, timestamps: bool) -> tuple[object, list[int]]:
        key = (language, timestamps)
        if key not in self._cache:
            from faster_whisper.tokenizer import Tokenizer

            tokenizer = Tokenizer(self._model.hf_tokenizer, self._multilingual,
                                  task="transcribe", language=language)
            previous = tokenizer.encode(" " + self._context) if self._context else []
            prompt = self._model.get_prompt(tokenizer, previous,
                                            without_timestamps=not timestamps,
                                            hotwords=self._hotwords)
            self._cache[key] = (tokenizer, prompt)
        return self._cache[key]


def fits_window(samples: int) -> bool:
    return samples <= int(_WINDOW_S * RATE)


def decode_partial(model, prompts: Prompts, audio: np.ndarray, no_speech_threshold: float,
                   timings: bool | Callable[[list[str]], bool] = False,
                   ) -> tuple[list[str], list[float] | None]:
    """Words of a quick decode of the bare audio (≤ 30 s; no timestamps, no guards but
    no-speech: partials are provisional), and with ``timings`` when each word ends (seconds
    into ``audio``, from the cross-attention alignment; None if it cannot be had).
    ``timings`` may be a test of the words: the alignment costs 10-30 % of the decode.
    (Forcing settled words in as a decoder prefix saves nothing measurable here: 84 against
    87 ms for 11 s of audio, and it lets consecutive decodes agree on what the prefix led
    them to, so it is not done.)"""
    features = model.feature_extractor(audio, padding=_HOP)[:, :_WINDOW_FRAMES]
    encoded = model.encode(features)
    tokenizer, prompt = prompts.get(prompts.resolve(encoded), timestamps=False)
    cap = len(prompt) + 4 + int(audio.size / RATE * _PARTIAL_TOKENS_PER_SECOND)
    result = model.model.generate(
        encoded, [prompt], beam_size=1, no_repeat_ngram_size=3,
        max_length=min(model.max_length, cap), suppress_blank=True, suppress_tokens=[-1],
        return_no_speech_prob=True,
    )[0]
    if result.no_speech_prob > no_speech_threshold:
        return [], None
    ids = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
    words = tokenizer.decode(ids).split()
    if not (words and (timings(words) if callable(timings) else timings)):
        return words, None
    frames = min(audio.size // _HOP, _WINDOW_FRAMES)
    return words, _word_ends(model.find_alignment(tokenizer, [ids], encoded, frames)[0], words)


def _word_ends(alignment: list[dict], words: list[str]) -> list[float] | None:
    """End time of each whitespace-separated word, from the aligner's words (which split
    differently: "well-known" is " well" + "-known"; both concatenate to the same text)."""
    text = "".join(a["word"] for a in alignment)
    if text.split() != words:
        return None
    ends: list[float] = []
    spans = iter(alignment)
    pos = 0
    for m in re.finditer(r"\S+", text):
        while pos < m.end():
            a = next(spans)
            pos += len(a["word"])
        ends.append(float(a["end"]))
    return ends


def decode_final(model, prompts: Prompts, audio: np.ndarray, beam_size: int, guards: Guards,
                 tail_s: float = _FINAL_TAIL_S,
                 min_window_s: float = _FINAL_MIN_WINDOW_S) -> Hypothesis:
    """One full-quality decode of a whole segment (≤ 30 s) with word timestamps and
    probabilities; EMPTY when the guards say it is not speech or the output is a loop."""
    seconds = audio.size / RATE
    window = min(int(_WINDOW_S * RATE),
                 max(audio.size + int(tail_s * RATE), int(min_window_s * RATE)))
    padded = np.zeros(window, dtype=np.float32)
    padded[: audio.size] = audio
    features = model.feature_extractor(padded, padding=0)[:, : window // _HOP]
    encoded = model.encode(features)
    language = prompts.resolve(encoded)
    tokenizer, prompt = prompts.get(language, timestamps=True)
    cap = len(prompt) + 8 + int(seconds * _FINAL_TOKENS_PER_SECOND)
    result = model.model.generate(
        encoded, [prompt], beam_size=beam_size, max_length=min(model.max_length, cap),
        return_scores=True, return_no_speech_prob=True, suppress_blank=True,
        suppress_tokens=[-1], max_initial_timestamp_index=50,
    )[0]
    tokens = result.sequences_ids[0]
    avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
    if result.no_speech_prob > guards.no_speech_threshold and (
        avg_logprob < guards.log_prob_threshold
    ):
        return EMPTY  # Whisper itself says: no speech, and it is guessing
    text_ids = _text_within(tokens, tokenizer, seconds)
    text = tokenizer.decode(text_ids).strip()
    if not any(c.isalnum() for c in text):
        return EMPTY
    if _compression_ratio(text) > guards.compression_ratio_threshold:
        return EMPTY  # a repetition loop, not a transcript
    words, end_confidence = _words(model, tokenizer, text_ids, encoded, audio.size // _HOP)
    confidence = (
        float(np.mean([w.confidence for w in words])) if words else float(np.exp(avg_logprob))
    )
    return Hypothesis(text, words=tuple(words), confidence=round(confidence, 4),
                      language=language, end_confidence=end_confidence)


def _text_within(tokens: list[int], tokenizer, seconds: float) -> list[int]:
    """Text tokens of the timestamped pieces that start before the audio ends: a piece
    stamped after it was invented from the padding."""
    limit = seconds - 0.1
    kept: list[int] = []
    piece: list[int] = []
    start: float | None = None
    for token in tokens:
        if token >= tokenizer.timestamp_begin:
            stamp = (token - tokenizer.timestamp_begin) * _TIMESTAMP_STEP_S
            if start is None:
                start = stamp  # opens a piece
                continue
            if start < limit:  # closes it
                kept += piece
            piece, start = [], None
        elif token < tokenizer.eot:
            piece.append(token)
    if piece and (start is None or start < limit):
        kept += piece
    return kept


def _words(model, tokenizer, text_ids: list[int], encoded,
           num_frames: int) -> tuple[list[Word], float | None]:
    """The words with times and probabilities, and the probability of the punctuation mark
    that ends the text (None without one): merged into its word, it would be lost."""
    from faster_whisper.transcribe import merge_punctuations

    if not text_ids:
        return [], None
    alignment = model.find_alignment(tokenizer, [text_ids], encoded, num_frames)[0]
    pieces = [a for a in alignment if a["word"].strip()]
    end = pieces[-1] if pieces else None
    end_confidence = (round(float(end["probability"]), 4)
                      if end is not None and end["word"].strip() in _TERMINAL else None)
    merge_punctuations(alignment, _PREPEND, _APPEND)
    return [
        Word(a["word"].strip(), round(a["start"] * 1000), round(a["end"] * 1000),
             round(float(a["probability"]), 4))
        for a in alignment if a["word"].strip()
    ], end_confidence


def _compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data))
