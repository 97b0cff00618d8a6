"""``POST /v1/stt/transcribe``: a whole file in, one transcript out.

The body (raw ``audio/*`` or a multipart ``file`` field, chunked or not) is decoded by FFmpeg
while it arrives and fed through the same VAD, endpointer, backend and inference pool as a
live stream, segment by segment, so recognition starts before the upload ends and memory stays
bounded on hour-long files. Input is never shed here: when recognition falls behind, the
upload is read more slowly. A request holds one session slot while it runs.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import janus
import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from inference.job import AudioChunk, Control, ControlItem, SessionJob
from protocol import batch
from protocol.common import ProtocolError
from protocol.container import ContainerDecoder
from protocol.pcm import TARGET_RATE
from session.events import ErrorCode, Final, SessionEnd, SessionError
from transport.capacity import Slot
from transport.context import ServerContext
from transport.multipart import FilePart, iter_upload
from transport.recognition import RecognitionOptions, open_recognizer

log = structlog.get_logger("sttd.batch")

_STATUS = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.INVALID_AUDIO: 400,
    ErrorCode.UNSUPPORTED_AUDIO: 415,
    ErrorCode.AUDIO_TOO_LONG: 413,
    ErrorCode.UPLOAD_TOO_LARGE: 413,
    ErrorCode.UPLOAD_TIMEOUT: 408,
    ErrorCode.BACKEND_ERROR: 500,
    ErrorCode.INTERNAL_ERROR: 500,
}
_IN_QUEUE = 8  # decoded pieces (≤ 1 s each) waiting for recognition

_OPENAPI = {
    "parameters": [
        {"name": "language", "in": "query", "schema": {"type": "string", "default": "auto"},
         "description": "'auto' or a BCP-47 tag such as 'en'."},
        {"name": "hotwords", "in": "query", "schema": {"type": "string"},
         "description": "Comma-separated words or phrases to favour."},
        {"name": "response_format", "in": "query",
         "schema": {"type": "string", "enum": ["json", "text", "srt", "vtt"], "default": "json"}},
        {"name": "vad_silence_ms", "in": "query",
         "schema": {"type": "integer", "minimum": 100, "maximum": 10000},
         "description": "Silence that ends a segment."},
    ],
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file"],
                "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "language": {"type": "string"}, "hotwords": {"type": "string"},
                    "response_format": {"type": "string",
                                        "enum": ["json", "text", "srt", "vtt"]},
                    "vad_silence_ms": {"type": "integer"},
                },
            }},
            "audio/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    "responses": {
        "200": {"description": "The transcript.", "content": {
            "application/json": {"schema": {"type": "object", "properties": {
                "text": {"type": "string"}, "duration_ms": {"type": "integer"},
                "latency_ms": {"type": "integer"},
                "language": {"type": "string", "nullable": True},
                "segments": {"type": "array", "items": {"type": "object", "properties": {
                    "start_ms": {"type": "integer"}, "end_ms": {"type": "integer"},
                    "text": {"type": "string"},
                    "confidence": {"type": "number", "nullable": True},
                    "reason": {"type": "string"},
                    "words": {"type": "array", "items": {"type": "object", "properties": {
                        "word": {"type": "string"}, "start_ms": {"type": "integer"},
                        "end_ms": {"type": "integer"},
                        "confidence": {"type": "number", "nullable": True}}}},
                }}},
            }}},
            "text/plain": {}, "application/x-subrip": {}, "text/vtt": {},
        }},
        "400": {"description": "Bad parameters or undecodable audio."},
        "401": {"description": "Missing or wrong bearer token (when STT_AUTH_TOKENS is set)."},
        "408": {"description": "The upload stalled for STT_UPLOAD_IDLE_TIMEOUT_SEC."},
        "413": {"description": "Upload or audio duration over the limit."},
        "415": {"description": "Not a media type or audio format the server decodes."},
        "503": {"description": "Server full or not ready."},
    },
}


def attach(app: FastAPI) -> None:
    app.add_api_route("/v1/stt/transcribe", transcribe, methods=["POST"],
                      openapi_extra=_OPENAPI, summary="Transcribe an audio file",
                      response_class=Response)


def _error(ctx: ServerContext, status: int, code: str, message: str) -> JSONResponse:
    ctx.metrics.batch_requests.labels(str(status)).inc()
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def transcribe(request: Request) -> Response:
    ctx: ServerContext = request.app.state.ctx
    if not ctx.gate.authorised(request.headers, request.query_params):
        ctx.metrics.rejections.labels("unauthorized").inc()
        response = _error(ctx, 401, "unauthorized", "a valid bearer token is required")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    if ctx.draining:
        response = _error(ctx, 503, "draining", "the server is shutting down; retry elsewhere")
        response.headers["Retry-After"] = "1"
        return response
    if not ctx.ready:
        ctx.metrics.rejections.labels("not_ready").inc()
        return _error(ctx, 503, "not_ready", "the backend is not loaded yet")
    slot = Slot()
    if not ctx.slots.try_take(slot):
        ctx.metrics.rejections.labels("capacity").inc()
        return _error(ctx, 503, "capacity", f"server is full ({ctx.slots.limit} sessions)")
    try:
        return await _transcribe(request, ctx, slot)
    except ProtocolError as exc:
        return _error(ctx, _STATUS.get(exc.code, 400), exc.code.value, exc.message)
    finally:
        ctx.slots.release(slot)


async def _transcribe(request: Request, ctx: ServerContext, slot: Slot) -> Response:
    started = time.monotonic()
    s = ctx.settings
    fields = dict(request.query_params)
    run: BatchRun | None = None
    decoder: ContainerDecoder | None = None
    try:
        async for part in iter_upload(request, s.max_upload_bytes, fields,
                                      s.upload_idle_timeout_sec):
            assert isinstance(part, FilePart)
            params = batch.parse_params(fields)
            recognizer = await open_recognizer(ctx, RecognitionOptions(
                language=params.language, hotwords=params.hotwords,
                vad_silence_ms=params.vad_silence_ms, partials=False,
            ))
            run = BatchRun(ctx, recognizer)
            slot.job = run.job
            decoder = ContainerDecoder(
                "mp4" if part.is_mp4 else "auto", max_seconds=s.max_audio_seconds,
                seekable=part.is_mp4,
            )
            async for chunk in part.chunks:
                async for pcm in decoder.feed(chunk):
                    await run.feed(pcm)
            async for pcm in decoder.finish():
                await run.feed(pcm)
        if run is None:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "no audio: send it as the body "
                                "(Content-Type audio/*) or as a multipart 'file' field")
        params = batch.parse_params(fields)  # response_format may follow the file
        finals = await run.finish()
    finally:
        if decoder is not None:
            decoder.close()
        if run is not None:
            run.close()
    duration_ms = run.samples * 1000 // TARGET_RATE
    latency_ms = round((time.monotonic() - started) * 1000)
    ctx.metrics.batch_requests.labels("200").inc()
    log.info("batch.done", duration_ms=duration_ms, latency_ms=latency_ms,
             segments=len(finals), response_format=params.response_format)
    body = batch.render(params.response_format, finals, duration_ms, latency_ms)
    return Response(body, media_type=batch.MEDIA_TYPES[params.response_format])


class BatchRun:
    """One upload's recognition on the shared inference pool: audio in with backpressure,
    finals out."""

    def __init__(self, ctx: ServerContext, recognizer) -> None:
        self._ctx = ctx
        self._in: janus.Queue = janus.Queue(maxsize=_IN_QUEUE)
        self._out: janus.Queue = janus.Queue()
        self.job = SessionJob(
            recognizer, in_queue=self._in, out_queue=self._out,
            out_queue_size=1 << 30,  # finals only: never shed
            schedule=ctx.batcher.schedule, metrics=ctx.metrics, sample_rate=TARGET_RATE,
        )
        self.samples = 0
        self._completed = False

    async def feed(self, pcm: bytes) -> None:
        samples = len(pcm) // 2
        self.samples += samples
        self._ctx.metrics.audio_received.inc(samples / TARGET_RATE)
        await self.job.put(AudioChunk(pcm, time.monotonic()))

    async def finish(self) -> list[Final]:
        await self.job.put(ControlItem(Control.EOS, time.monotonic()))
        finals: list[Final] = []
        async for event in self._events():
            if isinstance(event, Final):
                finals.append(event)
            elif isinstance(event, SessionError):
                raise ProtocolError(event.code, event.message)
        self._completed = True
        return finals

    async def _events(self) -> AsyncIterator:
        get = self._out.async_q.get
        while not isinstance(event := await get(), SessionEnd):
            yield event
            if isinstance(event, SessionError):
                return

    def close(self) -> None:
        job = self.job
        job.cancelled = not self._completed
        dropped = job.offer(ControlItem(Control.CLOSE, time.monotonic()))
        if dropped is not None:
            job.discard(dropped)
        self._ctx.metrics.sessions.labels("completed" if self._completed else "error").inc()
