"""``/v1/stt/ws``: the native streaming protocol's handshake and session set-up."""

from __future__ import annotations

import uuid

import structlog
from fastapi import FastAPI
from starlette.websockets import WebSocket

from protocol import native
from protocol.audio import RawDecoder
from protocol.common import CLOSE_CODES, ProtocolError
from protocol.container import ContainerDecoder
from protocol.pcm import TARGET_RATE
from session.events import Ready
from transport.capacity import Slot
from transport.context import ServerContext
from transport.handshake import deny
from transport.live import LiveSession, Wire
from transport.recognition import RecognitionOptions, open_recognizer

log = structlog.get_logger("sttd.session")


def attach(app: FastAPI) -> None:
    app.add_api_websocket_route("/v1/stt/ws", native_stream)


async def native_stream(websocket: WebSocket) -> None:
    ctx: ServerContext = websocket.app.state.ctx
    m = ctx.metrics
    if not ctx.gate.authorised(websocket.headers, websocket.query_params):
        m.rejections.labels("unauthorized").inc()
        await deny(websocket, 401, "unauthorized", "a valid bearer token is required")
        return
    if not ctx.gate.origin_allowed(websocket.headers):
        m.rejections.labels("forbidden_origin").inc()
        await deny(websocket, 403, "forbidden_origin", "this Origin may not connect")
        return
    try:
        params = native.parse_params(websocket.query_params)
    except ProtocolError as exc:
        m.rejections.labels("bad_request").inc()
        await deny(websocket, 400, exc.code.value, exc.message)
        return
    if ctx.draining:
        m.rejections.labels("draining").inc()
        await deny(websocket, 503, "draining", "the server is shutting down; retry elsewhere",
                   headers={"Retry-After": "1"})
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


def make_decoder(params: native.NativeParams, max_seconds: float):
    if params.is_raw:
        return RawDecoder(params.codec, params.sample_rate, params.channels)
    return ContainerDecoder(params.codec, max_seconds=max_seconds)


async def _serve(
    websocket: WebSocket, ctx: ServerContext, params: native.NativeParams, slot: Slot
) -> None:
    try:
        recognizer = await open_recognizer(ctx, RecognitionOptions(
            language=params.language, hotwords=params.hotwords, n_best=params.n_best,
            vad=params.vad,
            vad_threshold=params.vad_threshold, vad_silence_ms=params.vad_silence_ms,
            max_segment_ms=params.max_segment_ms, partial_ms=params.partial_ms,
        ))
    except ProtocolError as exc:
        ctx.metrics.rejections.labels("bad_request").inc()
        await deny(websocket, 400, exc.code.value, exc.message)
        return
    session_id = uuid.uuid4().hex
    slog = log.bind(session_id=session_id, call_id=params.call_id, protocol="native")
    wire = Wire(
        parse_text=native.parse_text,
        encoder=native.NativeEncoder(params.call_id),
        decoder=make_decoder(params, ctx.settings.max_session_seconds),
        close_codes=CLOSE_CODES,
    )
    await websocket.accept()
    slog.info("session.opened", codec=params.codec, sample_rate=params.sample_rate,
              channels=params.channels, language=params.language)
    backend = ctx.backend
    ready = Ready(session_id, TARGET_RATE, backend.name, backend.model)
    live = LiveSession(websocket, ctx, wire, recognizer, ready, slog)
    slot.job = live.job
    slot.drain = live.drain
    await live.run()
