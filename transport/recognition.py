"""Building one session's recognizer (backend stream, VAD, endpointer) from its options:
shared by the WebSocket session and the batch endpoint."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from backends.base import BackendError, StreamOptions
from protocol.common import ProtocolError
from protocol.pcm import TARGET_RATE
from session.endpointer import EndpointConfig
from session.events import ErrorCode
from session.recognizer import RecognizerConfig, SegmentRecognizer
from session.silero import SileroVAD, load_silero
from transport.context import ServerContext


@dataclass(frozen=True, slots=True)
class RecognitionOptions:
    language: str = "auto"
    hotwords: tuple[str, ...] = ()
    n_best: int = 1
    vad: str | None = None  # None: the server default
    vad_threshold: int | None = None
    vad_silence_ms: int | None = None
    max_segment_ms: int | None = None
    partial_ms: int | None = None
    partials: bool = True


def make_vad(kind: str, settings) -> SileroVAD | None:
    """A per-session Silero detector, or None for the recognizer's energy VAD."""
    if kind != "silero":
        return None
    return SileroVAD(load_silero(), threshold=settings.silero_threshold)


async def open_recognizer(ctx: ServerContext, o: RecognitionOptions) -> SegmentRecognizer:
    """Raises ProtocolError(BAD_REQUEST) when the backend refuses the options."""
    s = ctx.settings
    backend = ctx.backend
    vad_kind = o.vad or s.vad
    if o.n_best > 1 and not backend.capabilities.n_best:
        raise ProtocolError(ErrorCode.BAD_REQUEST,
                            f"backend {backend.name} gives no n-best lists; use n_best=1")
    options = StreamOptions(sample_rate=TARGET_RATE, language=o.language, hotwords=o.hotwords,
                            n_best=o.n_best, vad=vad_kind)
    try:
        stream = await asyncio.to_thread(backend.open_stream, options)
    except BackendError as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, str(exc)) from None
    try:
        vad = make_vad(vad_kind, s)
    except RuntimeError as exc:
        await asyncio.to_thread(stream.close)
        raise ProtocolError(ErrorCode.BAD_REQUEST, str(exc)) from None
    endpoint = EndpointConfig(
        sample_rate=TARGET_RATE,
        speech_start_ms=s.vad_speech_start_ms,
        silence_ms=o.vad_silence_ms or s.vad_silence_ms,
        preroll_ms=s.vad_preroll_ms,
        max_segment_ms=o.max_segment_ms or s.max_segment_ms,
    )
    observe = ctx.metrics.inference_time
    timers = {k: observe.labels(backend.name, k) for k in ("accept", "partial", "final")}

    def on_inference(kind: str, seconds: float) -> None:
        timers[kind].observe(seconds)

    return SegmentRecognizer(
        stream,
        RecognizerConfig(
            endpoint=endpoint,
            vad_threshold=s.vad_threshold if o.vad_threshold is None else o.vad_threshold,
            partial_ms=o.partial_ms or round(s.streaming_chunk_size_sec * 1000),
            partials=o.partials and backend.capabilities.partials,
        ),
        on_inference=on_inference,
        vad=vad,
    )
