"""Qwen3-ASR on a GPU engine (vLLM in-process, or a remote ``vllm serve``): many streams,
one engine, batched by vLLM's continuous batching.

Streaming scheme per session (``../shared/reference/qwen3-vllm.md`` §5):

- **Ticks.** Qwen3-ASR is not a streaming model: a partial re-decodes the whole open segment.
  A session has at most one decode in flight. ``partial()`` starts one when ``tick_sec`` of new
  audio has come in since the last, and returns the previous result; audio arriving meanwhile
  joins the next tick (latest wins), so under load the interval stretches by itself instead
  of queueing stale work. When a decode lands the stream wakes its session, which collects it.
- **Rollback prefix.** After ``unfixed_ticks`` decodes, each tick forces the previous answer
  minus its last ``rollback_tokens`` tokens as the start of the answer, so the model only
  generates the unstable tail and the new words (fewer tokens, steadier partials).
- **Finals.** At the endpoint the in-flight partial is aborted and the whole segment is
  decoded once without a prefix (offline quality), then the segment's audio and prefix are
  dropped, so the cost of a long stream stays bounded by the segment cap.
- **Settled words.** Words two consecutive partials agree on (the rollback prefix makes them
  agree), except the last, are settled, and the final begins with them (``backends.stable``):
  the offline decode is kept where it agrees, which is nearly always.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import structlog

from backends.base import (
    EMPTY,
    BackendError,
    Capabilities,
    Hypothesis,
    StreamOptions,
    before_waiting,
)
from backends.qwen3_engine import Decoded, DecodeRequest, Engine, EngineThread
from backends.qwen3_text import (
    LANGUAGES,
    Tokenizer,
    fix_repetitions,
    language_code,
    language_name,
    parse_clean,
    parse_output,
    rollback_prefix,
)
from backends.stable import Settler, keep_promise

log = structlog.get_logger("sttd.qwen3")

RATE = 16000
AUDIO_TOKENS_PER_SECOND = 13  # the AuT encoder's output rate (12.5 Hz, rounded up per chunk)
PROMPT_TOKENS = 40  # template, language tag and a little context, without the audio
_MIN_SAMPLES = RATE // 2  # shorter audio is padded: the encoder needs half a second


@dataclass(frozen=True, slots=True)
class Qwen3Options:
    tick_sec: float = 1.0  # new audio between two partial decodes of a session
    unfixed_ticks: int = 2  # decodes without a forced prefix at the start of a segment
    rollback_tokens: int = 5  # unstable tail dropped from the previous answer
    max_segment_sec: float = 30.0  # the longest audio one decode may get
    max_tokens: int = 256  # cap on any decode's output
    final_timeout_sec: float = 30.0
    final_concurrency: int = 64  # finals in flight at once (one inference thread each)
    warmup: bool = True
    max_context_tokens: int | None = None  # room left for hotwords in the engine's context


def audio_tokens(samples: int) -> int:
    """Audio tokens the encoder makes of ``samples`` at 16 kHz (vLLM's
    ``_get_feat_extract_output_lengths``: 13 per whole second, a formula for the rest)."""
    frames = samples // 160
    rest = frames % 100
    tail = (((rest - 1) // 2 + 1 - 1) // 2 + 1 - 1) // 2 + 1 if rest else 0
    return tail + frames // 100 * 13


def decode_tokens(options: Qwen3Options) -> int:
    """Context one decode of the longest segment needs, hotwords aside: audio, template, a
    forced prefix (at most one earlier answer) and the output."""
    return (audio_tokens(int(options.max_segment_sec * RATE)) + PROMPT_TOKENS
            + 2 * options.max_tokens)


def check_model_len(max_model_len: int, options: Qwen3Options) -> None:
    """A decode of the longest segment must fit the engine's context, or vLLM rejects it."""
    need = decode_tokens(options)
    if need > max_model_len:
        raise ValueError(
            f"STT_QWEN3_MAX_MODEL_LEN={max_model_len} is too small for "
            f"{options.max_segment_sec:g} s segments and {options.max_tokens} output tokens "
            f"(plus as many for a forced prefix) "
            f"(needs {need}); raise it or lower STT_QWEN3_MAX_SEGMENT_SEC / _MAX_TOKENS")


def final_budget(samples: int, cap: int) -> int:
    """Output tokens for a decode of the whole segment: fast speech is ~5 tokens a second."""
    return min(cap, 16 + math.ceil(8 * samples / RATE))


class Qwen3Backend:
    name = "qwen3"

    def __init__(self, engine: Engine, model: str, options: Qwen3Options | None = None) -> None:
        self.model = model
        self.options = options or Qwen3Options()
        self.capabilities = Capabilities(
            partials=True, words=False, n_best=False,
            languages=tuple(sorted(LANGUAGES)) + ("auto",),
            inference_threads=self.options.final_concurrency,
        )
        self._engine = EngineThread(engine)
        self._loaded = False
        self._open = 0
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._in_flight = 0
        self.on_decode: Callable[[str, str, float], None] = lambda kind, outcome, seconds: None

    @property
    def engine(self) -> EngineThread:
        return self._engine

    def load(self) -> None:
        self._engine.start()
        served = getattr(self._engine.engine, "model", None)  # remote: learnt at start
        if isinstance(served, str) and served:
            self.model = served
        if self.options.warmup:
            self._warm_up()
        self._loaded = True

    def _warm_up(self) -> None:
        """One decode of real length before the server says it is ready: the first request
        otherwise pays for kernel selection and graph capture (seconds, not milliseconds)."""
        noise = np.random.default_rng(0).normal(0, 300, RATE * 5).astype(np.int16)
        request = DecodeRequest("warmup", noise, max_tokens=8)
        self._engine.submit(request).result(timeout=600)
        log.info("qwen3.warmed_up", engine=self._engine.engine.name)

    async def check_health(self) -> None:
        await self._engine.check_health()

    def open_stream(self, options: StreamOptions) -> Qwen3Stream:
        if not (self._loaded and self._engine.running):
            raise BackendError("the Qwen3-ASR engine is not running", retryable=True)
        if options.sample_rate != RATE:
            raise BackendError(f"Qwen3-ASR takes {RATE} Hz audio, not {options.sample_rate}")
        try:
            language = language_name(options.language)
        except ValueError as exc:
            raise BackendError(str(exc)) from None
        context = " ".join(options.hotwords)
        tokenizer = self._engine.engine.tokenizer()
        room = self.options.max_context_tokens
        used = len(tokenizer.encode(context)) if context and room is not None else 0
        if room is not None and used > room:
            raise BackendError(f"hotwords take {used} tokens; the model's context leaves "
                               f"room for {room}")
        # Text carried from an earlier session (an adaptation state) follows the hotwords in
        # the system context, its end kept when it does not all fit.
        carried = options.context.strip()
        if carried and room is not None:
            ids, keep = tokenizer.encode(carried), room - used
            carried = tokenizer.decode(ids[max(0, len(ids) - keep):]) if keep > 0 else ""
        context = " ".join(t for t in (context, carried.strip()) if t)
        with self._lock:
            self._open += 1
        return Qwen3Stream(self, language=language, context=context,
                           stream_id=f"{next(self._ids)}-{uuid.uuid4().hex[:8]}",
                           tokenizer=tokenizer)

    @property
    def decodes_in_flight(self) -> int:
        return self._in_flight

    def submit(self, request: DecodeRequest, kind: str) -> concurrent.futures.Future[Decoded]:
        """Hand a decode to the engine thread, counted and timed for the metrics."""
        future = self._engine.submit(request)
        started = time.monotonic()
        with self._lock:
            self._in_flight += 1
        future.add_done_callback(lambda f: self._decode_ended(f, kind, started))
        return future

    def _decode_ended(self, future: concurrent.futures.Future, kind: str, started: float
                      ) -> None:
        with self._lock:
            self._in_flight -= 1
        if future.cancelled():
            outcome = "timeout" if getattr(future, "sttd_timed_out", False) else "aborted"
        else:
            outcome = "failed" if future.exception() is not None else "ok"
        self.on_decode(kind, outcome, time.monotonic() - started)

    def _stream_closed(self) -> None:
        with self._lock:
            self._open -= 1

    @property
    def open_streams(self) -> int:
        return self._open

    def close(self) -> None:
        self._engine.stop()


def _padded(audio: np.ndarray) -> np.ndarray:
    if audio.size >= _MIN_SAMPLES:
        return audio
    return np.concatenate([audio, np.zeros(_MIN_SAMPLES - audio.size, np.int16)])


class _Audio:
    """The open segment as received (int16), grown by doubling so appends stay amortised
    O(1). Samples once written are never overwritten (a new segment gets a new buffer), so
    a decode can be handed a view instead of a copy of up to 30 s per tick."""

    def __init__(self) -> None:
        self._buf = np.zeros(RATE * 4, dtype=np.int16)
        self.size = 0

    def append(self, pcm: np.ndarray) -> None:
        end = self.size + pcm.size
        if end > self._buf.size:
            grown = np.zeros(max(end, self._buf.size * 2), dtype=np.int16)
            grown[: self.size] = self._buf[: self.size]
            self._buf = grown  # views of the old buffer stay valid: it is not reused
        self._buf[self.size : end] = pcm
        self.size = end

    def snapshot(self, limit: int) -> np.ndarray:
        """The newest ``limit`` samples, as a read-only view."""
        view = self._buf[max(0, self.size - limit) : self.size]
        view.flags.writeable = False
        return view


class Qwen3Stream:
    """One session's segment state. ``accept``/``partial``/``finalize`` come from one
    inference thread at a time. The engine thread only wakes the session when a decode lands
    (no lock, no parsing there: the engine loop serves every session)."""

    def __init__(self, backend: Qwen3Backend, *, language: str | None, context: str,
                 stream_id: str, tokenizer: Tokenizer) -> None:
        self._backend = backend
        self._opts = backend.options
        self._tokenizer = tokenizer
        self._language = language
        self._context = context
        self._id = stream_id
        self._decodes = itertools.count()
        self._audio = _Audio()
        self._limit = int(self._opts.max_segment_sec * RATE)
        self._tick = max(1, int(self._opts.tick_sec * RATE))
        self._lock = threading.Lock()  # close() may come from another thread than partial()
        self._inflight: _Partial | None = None
        self._sent_samples = 0  # segment audio the last partial decode was given
        self._heard_samples = 0  # segment audio the last successful partial covered
        self._ticks = 0  # partial decodes landed in this segment
        self._answer = ""  # the last partial's whole answer, prefix included, loop-free
        self._settler = Settler(agree=2, hold_back=1)
        self.revised = 0  # settled words a final contradicted (kept all the same)
        self._wake: Callable[[], None] = lambda: None
        self._closed = False
        self.partial_failures = 0

    # -- NotifyingStream -------------------------------------------------------------------

    def set_wake(self, wake: Callable[[], None]) -> None:
        self._wake = wake

    @property
    def result_ready(self) -> bool:
        pending = self._inflight
        return pending is not None and pending.future.done()

    # -- ASRStream -------------------------------------------------------------------------

    def accept(self, pcm: np.ndarray) -> None:
        self._audio.append(pcm)

    def partial(self) -> Hypothesis | None:
        with self._lock:
            landed = self._collect()
            if self._inflight is None and self._audio.size - self._sent_samples >= self._tick:
                self._start_partial()
        return landed

    def finalize(self) -> Hypothesis:
        with self._lock:
            self._abort_partial()
            audio = self._audio.snapshot(self._audio.size) if self._audio.size else None
            settled = self._settler.settled
            self._reset_segment()
        if audio is None:
            return keep_promise(EMPTY, settled).hypothesis
        futures: list[concurrent.futures.Future[Decoded]] = []
        try:
            # A segment over the cap (a session raised max_segment_ms) is decoded in pieces
            # cut at quiet moments, all at once: no audio is left out of a final.
            for piece in split_quietly(audio, self._limit):
                futures.append(self._engine_submit("final", DecodeRequest(
                    self._request_id("f"), _padded(piece), context=self._context,
                    language=self._language, want_confidence=True,
                    max_tokens=final_budget(piece.size, self._opts.max_tokens))))
            before_waiting()  # sessions batched behind this one need not wait for our final
            deadline = time.monotonic() + self._opts.final_timeout_sec
            decoded = [self._wait(f, deadline) for f in futures]
        finally:
            for f in futures:
                f.cancel()
        parsed = [parse_output(d.text, self._language) for d in decoded]
        language = next((lang for lang, _ in parsed if lang), "")
        tokens = sum(d.tokens for d in decoded)
        confidence = None
        if tokens and all(d.logprob is not None for d in decoded):
            confidence = round(math.exp(sum(d.logprob for d in decoded) / tokens), 4)
        kept = keep_promise(Hypothesis(
            text=" ".join(t for _, t in parsed if t), confidence=confidence,
            language=language_code(language) if language else None), settled)
        self.revised += kept.revised
        return kept.hypothesis

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._abort_partial()
            self._audio = _Audio()
        self._backend._stream_closed()

    # -- internals (under the lock) --------------------------------------------------------

    def _collect(self) -> Hypothesis | None:
        """The landed partial decode, if any, as a hypothesis; a failed one is skipped."""
        pending = self._inflight
        if pending is None or not pending.future.done():
            return None
        self._inflight = None
        error = pending.future.exception()
        if error is not None:
            self.partial_failures += 1
            log.warning("qwen3.partial_failed", stream=self._id, error=repr(error))
            return None
        # Loop-free once, for both the partial and the next prefix: a repetition loop must
        # not become the next prompt.
        self._answer = fix_repetitions(pending.prefix + pending.future.result().text)
        self._ticks += 1
        self._heard_samples = pending.samples
        language, text = parse_clean(self._answer, self._language)
        shown = self._settler.update(text.split())
        if shown is None:
            return None
        return replace(shown, covered_samples=pending.samples,
                       language=language_code(language) if language else None)

    def _start_partial(self) -> None:
        samples = self._audio.size
        prefix = ""
        # Past the cap a partial hears only the newest window: a prefix for the whole
        # segment would ask the model to continue text for audio it cannot hear.
        if self._ticks >= self._opts.unfixed_ticks and self._answer and samples <= self._limit:
            prefix = rollback_prefix(self._answer, self._tokenizer, self._opts.rollback_tokens)
        new = samples - self._heard_samples
        budget = (self._opts.rollback_tokens + 8 + math.ceil(8 * new / RATE) if prefix
                  else final_budget(min(samples, self._limit), self._opts.max_tokens))
        request = DecodeRequest(
            self._request_id("p"), _padded(self._audio.snapshot(self._limit)),
            context=self._context,
            language=self._language, prefix=prefix,
            max_tokens=min(budget, self._opts.max_tokens),
        )
        try:
            future = self._engine_submit("partial", request)
        except BackendError:
            self.partial_failures += 1
            return  # the final reports an engine that is gone
        self._inflight = _Partial(future, prefix, samples)
        self._sent_samples = samples
        wake = self._wake
        future.add_done_callback(lambda f: None if f.cancelled() else wake())

    def _abort_partial(self) -> None:
        pending, self._inflight = self._inflight, None
        if pending is not None:
            pending.future.cancel()  # cancels the engine task; vLLM aborts the request

    def _reset_segment(self) -> None:
        self._audio = _Audio()  # not cleared: decodes may still hold views of the old one
        self._sent_samples = self._heard_samples = self._ticks = 0
        self._answer = ""
        self._settler = Settler(agree=2, hold_back=1)

    def _request_id(self, kind: str) -> str:
        return f"sttd-{self._id}-{kind}{next(self._decodes)}"

    def _engine_submit(self, kind: str, request: DecodeRequest
                       ) -> concurrent.futures.Future[Decoded]:
        try:
            return self._backend.submit(request, kind)
        except RuntimeError as exc:
            raise BackendError(str(exc), retryable=True) from None

    def _wait(self, future: concurrent.futures.Future[Decoded], deadline: float) -> Decoded:
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            future.sttd_timed_out = True  # read by the done-callback for the metric
            future.cancel()
            raise BackendError(
                f"the engine gave no final in {self._opts.final_timeout_sec:g} s",
                retryable=True) from None
        except concurrent.futures.CancelledError:
            raise BackendError("the final decode was cancelled (engine stopping)",
                               retryable=True) from None
        except Exception as exc:
            raise BackendError(f"engine error: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class _Partial:
    future: concurrent.futures.Future[Decoded]
    prefix: str  # forced before the decode's output: the whole answer is prefix + text
    samples: int  # segment audio the decode was given


def split_quietly(audio: np.ndarray, limit: int) -> list[np.ndarray]:
    """Pieces of at most ``limit`` samples, each cut at the quietest 100 ms in the last
    quarter (at most 2 s) before the limit: not mid-word when a pause is near."""
    pieces, start, frame = [], 0, RATE // 10
    search = min(2 * RATE, limit // 4)
    while audio.size - start > limit:
        end = start + limit
        lo = max(start + frame, end - search)
        window = audio[lo:end].astype(np.float32)
        usable = window.size // frame * frame
        if usable:
            energy = np.square(window[:usable]).reshape(-1, frame).sum(axis=1)
            end = lo + int(np.argmin(energy)) * frame + frame // 2
        pieces.append(audio[start:end])
        start = end
    pieces.append(audio[start:])
    return pieces
