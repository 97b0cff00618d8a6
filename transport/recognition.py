"""Building one session's recognizer (backend stream, VAD, endpointer) from its options, and
rebuilding its parts when a live session is reconfigured: shared by every protocol."""

from __future__ import annotations

import asyncio

from backends.base import ASRStream, BackendError, StreamOptions
from protocol.common import ProtocolError
from protocol.pcm import TARGET_RATE
from session.endpointer import EndpointConfig
from session.events import ErrorCode
from session.options import RecognitionOptions
from session.recognizer import RecognizerConfig, SegmentRecognizer
from session.silero import SileroVAD, load_silero
from session.turns import TurnConfig
from transport.context import ServerContext


def make_vad(kind: str, settings, level: float | None = None) -> SileroVAD | None:
    """A per-session Silero detector, or None for the recognizer's energy VAD."""
    if kind != "silero":
        return None
    threshold = settings.silero_threshold if level is None else level
    return SileroVAD(load_silero(), threshold=threshold)


class RecognitionSetup:
    """The server's settings applied to one session's options (``session.recognizer.Setup``)."""

    def __init__(self, ctx: ServerContext) -> None:
        self._settings = ctx.settings
        self._backend = ctx.backend

    def vad_kind(self, o: RecognitionOptions) -> str:
        return o.vad or self._settings.vad

    def recognizer_config(self, o: RecognitionOptions) -> RecognizerConfig:
        s = self._settings
        endpoint = EndpointConfig(
            sample_rate=TARGET_RATE,
            speech_start_ms=s.vad_speech_start_ms,
            silence_ms=_segment_silence(o, s.vad_silence_ms) if o.endpointing else None,
            preroll_ms=s.vad_preroll_ms if o.preroll_ms is None else o.preroll_ms,
            max_segment_ms=o.max_segment_ms or s.max_segment_ms,
            cut_window_ms=s.max_segment_cut_window_ms,
            overlap_ms=s.max_segment_overlap_ms,
            reach_back_ms=s.max_segment_reach_back_ms,
        )
        if o.vad_threshold is not None:
            threshold = o.vad_threshold
        elif o.vad_level is not None:  # 0.5 is the server's own setting; 1.0 twice as deaf
            threshold = round(s.vad_threshold * 2 * o.vad_level)
        else:
            threshold = s.vad_threshold
        return RecognizerConfig(
            endpoint=endpoint,
            vad_threshold=threshold,
            partial_ms=o.partial_ms or round(s.streaming_chunk_size_sec * 1000),
            partials=o.partials and self._backend.capabilities.partials,
            early_final_lead_ms=s.early_final_lead_ms or None,
        )

    def voice_detector(self, o: RecognitionOptions) -> SileroVAD | None:
        return make_vad(self.vad_kind(o), self._settings, o.vad_level)

    def open_stream(self, o: RecognitionOptions) -> ASRStream:
        """Raises BackendError when the backend refuses the options."""
        return self._backend.open_stream(StreamOptions(
            sample_rate=TARGET_RATE, language=o.language, hotwords=o.hotwords,
            n_best=o.n_best, vad=self.vad_kind(o), context=o.context))


async def open_recognizer(ctx: ServerContext, o: RecognitionOptions) -> SegmentRecognizer:
    """Raises ProtocolError(BAD_REQUEST) when the backend refuses the options."""
    backend = ctx.backend
    setup = RecognitionSetup(ctx)
    if o.n_best > 1 and not backend.capabilities.n_best:
        raise ProtocolError(ErrorCode.BAD_REQUEST,
                            f"backend {backend.name} gives no n-best lists; use n_best=1")
    try:
        stream = await asyncio.to_thread(setup.open_stream, o)
    except BackendError as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, str(exc)) from None
    try:
        vad = setup.voice_detector(o)
    except RuntimeError as exc:
        await asyncio.to_thread(stream.close)
        raise ProtocolError(ErrorCode.BAD_REQUEST, str(exc)) from None
    observe = ctx.metrics.inference_time
    timers = {k: observe.labels(backend.name, k)
              for k in ("accept", "partial", "final", "early_final")}
    early = {used: ctx.metrics.early_finals.labels(backend.name, "used" if used else "wasted")
             for used in (True, False)}

    def on_inference(kind: str, seconds: float) -> None:
        timers[kind].observe(seconds)

    return SegmentRecognizer(
        stream, setup.recognizer_config(o), on_inference=on_inference,
        on_early_final=lambda used: early[used].inc(), vad=vad, setup=setup, options=o,
    )


def _segment_silence(o: RecognitionOptions, default_ms: int) -> int:
    """The pause that ends a segment: a turn cannot end before its last segment does, so a
    session whose turns may end sooner (``turn_min_silence_ms``) gets segments as short."""
    silence = o.vad_silence_ms or default_ms
    turns = TurnConfig.of(o)
    return silence if turns is None else min(silence, turns.shortest_ms)
