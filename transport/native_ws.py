"""``/v1/stt/ws``: the native streaming protocol's handshake and session set-up."""

from __future__ import annotations

import asyncio
import uuid

import structlog
from fastapi import FastAPI
from starlette.websockets import WebSocket

from backends.base import BackendError, StreamOptions
from protocol import native
from protocol.audio import PcmS16Decoder
from protocol.common import CLOSE_CODES, ProtocolError
from session.endpointer import EndpointConfig
from session.events import Ready
from session.recognizer import RecognizerConfig, SegmentRecognizer
from session.silero import SileroVAD, load_silero
from transport.capacity import Slot
from transport.context import ServerContext
from transport.handshake import deny
from transport.live import LiveSession, Wire

log = structlog.get_logger("sttd.session")


def make_vad(kind: str, settings) -> SileroVAD | None:
    """A per-session Silero detector, or None for the recognizer's energy VAD."""
    if kind != "silero":
        return None
    return SileroVAD(load_silero(), threshold=settings.silero_threshold)


def attach(app: FastAPI) -> None:
    app.add_api_websocket_route("/v1/stt/ws", native_stream)


async def native_stream(websocket: WebSocket) -> None:
    ctx: ServerContext = websocket.app.state.ctx
    m = ctx.metrics
    try:
        params = native.parse_params(websocket.query_params)
    except ProtocolError as exc:
        m.rejections.labels("bad_request").inc()
        await deny(websocket, 400, exc.code.value, exc.message)
        return
    if not ctx.ready:
        m.rejections.labels("not_ready").inc()
        await deny(websocket, 503, "not_ready", "the backend is not loaded yet")
        return
    slot = Slot()
    if not ctx.slots.try_take(slot):
        m.rejections.labels("capacity").inc()
        await deny(websocket, 503, "capacity", f"server is full ({ctx.slots.limit} sessions)")
        return
    m.active_sessions.inc()
    try:
        await _serve(websocket, ctx, params, slot)
    finally:
        ctx.slots.release(slot)
        m.active_sessions.dec()


async def _serve(
    websocket: WebSocket, ctx: ServerContext, params: native.NativeParams, slot: Slot
) -> None:
    s = ctx.settings
    backend = ctx.backend
    options = StreamOptions(
        sample_rate=params.sample_rate, language=params.language, hotwords=params.hotwords,
        vad=params.vad or s.vad,
    )
    try:
        stream = await asyncio.to_thread(backend.open_stream, options)
    except BackendError as exc:
        ctx.metrics.rejections.labels("bad_request").inc()
        await deny(websocket, 400, "bad_request", str(exc))
        return
    try:
        vad = make_vad(params.vad or s.vad, s)
    except RuntimeError as exc:
        await asyncio.to_thread(stream.close)
        ctx.metrics.rejections.labels("bad_request").inc()
        await deny(websocket, 400, "bad_request", str(exc))
        return
    session_id = uuid.uuid4().hex
    slog = log.bind(session_id=session_id, call_id=params.call_id, protocol="native")
    endpoint = EndpointConfig(
        sample_rate=params.sample_rate,
        speech_start_ms=s.vad_speech_start_ms,
        silence_ms=params.vad_silence_ms or s.vad_silence_ms,
        preroll_ms=s.vad_preroll_ms,
        max_segment_ms=params.max_segment_ms or s.max_segment_ms,
    )
    observe = ctx.metrics.inference_time
    timers = {k: observe.labels(backend.name, k) for k in ("partial", "final")}

    def on_inference(kind: str, seconds: float) -> None:
        timers[kind].observe(seconds)

    recognizer = SegmentRecognizer(
        stream,
        RecognizerConfig(
            endpoint=endpoint,
            vad_threshold=s.vad_threshold if params.vad_threshold is None else params.vad_threshold,
            partial_ms=params.partial_ms or round(s.streaming_chunk_size_sec * 1000),
            partials=backend.capabilities.partials,
        ),
        on_inference=on_inference,
        vad=vad,
    )
    wire = Wire(
        parse_text=native.parse_text,
        encoder=native.NativeEncoder(params.call_id),
        decoder=PcmS16Decoder(),
        close_codes=CLOSE_CODES,
    )
    await websocket.accept()
    slog.info("session.opened", sample_rate=params.sample_rate, language=params.language)
    ready = Ready(session_id, params.sample_rate, backend.name, backend.model)
    live = LiveSession(websocket, ctx, wire, recognizer, ready, slog)
    slot.job = live.job
    await live.run()
