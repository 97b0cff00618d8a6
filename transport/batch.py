"""``POST /v1/stt/transcribe``: a whole file in, one transcript out.

The body (raw ``audio/*`` or a multipart ``file`` field, chunked or not) is decoded by FFmpeg
while it arrives and fed through the same VAD, endpointer, backend and inference pool as a
live stream, segment by segment, so recognition starts before the upload ends and memory stays
bounded on hour-long files. Input is never shed here: when recognition falls behind, the
upload is read more slowly. A request holds one session slot while it runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from inference.job import AudioChunk, Control, ControlItem, SessionJob
from protocol import batch
from protocol.common import ProtocolError
from protocol.container import ContainerDecoder
from protocol.pcm import TARGET_RATE
from session.events import ErrorCode, Final, SessionEnd, SessionError
from transport.capacity import Slot
from transport.context import ServerContext
from transport.multipart import FilePart, UploadBody, UploadLimits, iter_upload
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
# stt_batch_requests_total status of a request whose client disconnected before its answer
# (nginx's "client closed request"; never sent, there is nobody to send it to)
CLIENT_CLOSED = "499"

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
        "408": {"description": "The upload stalled for STT_UPLOAD_IDLE_TIMEOUT_SEC, took "
                "longer than STT_UPLOAD_DEADLINE_SEC, or arrived slower than "
                "STT_UPLOAD_MIN_BYTES_PER_SEC (with audio slower than real time)."},
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
        ctx.metrics.rejections.labels("draining").inc()
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
    """Reads and recognises the upload; stops at once when the client goes away, during the
    upload or after it (what it sent is not recognised for nobody)."""
    started = time.monotonic()
    s = ctx.settings
    decoding: list[ContainerDecoder] = []  # the decoder, once the file part has begun
    body = UploadBody(
        request.receive,
        UploadLimits(max_bytes=s.max_upload_bytes, idle_timeout_s=s.upload_idle_timeout_sec,
                     min_bytes_per_sec=s.upload_min_bytes_per_sec,
                     deadline_s=s.upload_deadline_sec),
        audio_seconds=lambda: decoding[0].decoded_samples / TARGET_RATE if decoding else 0.0,
    )
    reader = asyncio.create_task(body.run())
    work = asyncio.create_task(_recognise(request, ctx, slot, body, decoding, started))
    try:
        await asyncio.wait((work, reader), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the server is stopping: stop the work too
        work.cancel()
        reader.cancel()
        await asyncio.gather(work, reader, return_exceptions=True)
        raise
    if not reader.done():  # answered (or refused) while the client listens
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        return work.result()
    # The reader stopped first: a limit (408, 413) or the client left, during the upload or
    # after it. Either way, stop decoding and recognising now.
    work.cancel()
    await asyncio.gather(work, return_exceptions=True)
    if not work.cancelled():
        exc = work.exception()
        if exc is None:
            return work.result()  # it had just finished
        if not isinstance(exc, ProtocolError | ClientDisconnect):
            raise exc
    if not reader.cancelled() and reader.exception() is not None:
        raise reader.exception()
    return _client_gone(ctx, body, decoding, started,
                        "recognition" if body.complete else "upload")


def _client_gone(ctx: ServerContext, body: UploadBody, decoding: list[ContainerDecoder],
                 started: float, during: str) -> Response:
    """Counted as 499 (nginx's "client closed request"); nobody reads the response."""
    ctx.metrics.batch_requests.labels(CLIENT_CLOSED).inc()
    log.info("batch.client_gone", during=during, received_bytes=body.bytes,
             decoded_ms=decoding[0].decoded_samples * 1000 // TARGET_RATE if decoding else 0,
             latency_ms=round((time.monotonic() - started) * 1000))
    return Response(status_code=int(CLIENT_CLOSED))


async def _recognise(request: Request, ctx: ServerContext, slot: Slot, body: UploadBody,
                     decoding: list[ContainerDecoder], started: float) -> Response:
    s = ctx.settings
    fields = dict(request.query_params)
    run: BatchRun | None = None
    decoder: ContainerDecoder | None = None
    try:
        async for part in iter_upload(request, body, fields):
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
            decoding.append(decoder)
            async for chunk in part.chunks:
                async for pcm in decoder.feed(chunk):
                    await run.feed(pcm)
        # The whole body has been read: a multipart body cut off before its closing boundary
        # was refused above, before the end of the audio is decoded as if it were complete.
        if run is None:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "no audio: send it as the body "
                                "(Content-Type audio/*) or as a multipart 'file' field")
        async for pcm in decoder.finish():
            await run.feed(pcm)
        params = batch.parse_params(fields)  # response_format may follow the file
        finals = await run.finish()
    finally:
        if decoder is not None:
            decoder.close()
        if run is not None:
            run.disconnected = body.client_left
            run.close()
    duration_ms = run.samples * 1000 // TARGET_RATE
    latency_ms = round((time.monotonic() - started) * 1000)
    ctx.metrics.batch_requests.labels("200").inc()
    log.info("batch.done", duration_ms=duration_ms, latency_ms=latency_ms,
             segments=len(finals), response_format=params.response_format)
    rendered = batch.render(params.response_format, finals, duration_ms, latency_ms)
    return Response(rendered, media_type=batch.MEDIA_TYPES[params.response_format])


class BatchRun:
    """One upload's recognition on the shared inference pool: audio in with backpressure,
    finals out."""

    disconnected = False  # set when the client went away (the session is counted so)

    def __init__(self, ctx: ServerContext, recognizer) -> None:
        self._ctx = ctx
        self.job = SessionJob(
            recognizer, schedule=ctx.batcher.schedule, metrics=ctx.metrics,
            sample_rate=TARGET_RATE, in_queue_ms=ctx.settings.in_queue_ms,
            out_queue_size=1 << 30,  # finals only: never shed
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
        get = self.job.events.get
        while not isinstance(event := await get(), SessionEnd):
            yield event
            if isinstance(event, SessionError):
                return

    def close(self) -> None:
        job = self.job
        job.cancelled = not self._completed
        job.offer(ControlItem(Control.CLOSE, time.monotonic()))
        outcome = ("completed" if self._completed
                   else "disconnected" if self.disconnected else "error")
        self._ctx.metrics.sessions.labels(outcome).inc()
