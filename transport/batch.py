"""File transcription endpoints: a whole file in, one transcript out (or server-sent events
as it is recognised), for every batch protocol: ``POST /v1/stt/transcribe`` (native) and
``POST /v1/audio/transcriptions`` (OpenAI). A protocol brings its form parser, its renderer
and its error object; reading, decoding, recognition and limits are shared.

The body (raw ``audio/*`` or a multipart ``file`` field, chunked or not) is decoded by FFmpeg
while it arrives and fed through the same VAD, endpointer, backend and inference pool as a
live stream, segment by segment, so recognition starts before the upload ends and memory stays
bounded on hour-long files. Input is never shed here: when recognition falls behind, the
upload is read more slowly. A request holds one session slot while it runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import ClientDisconnect

from inference.job import AudioChunk, Control, ControlItem, SessionJob
from protocol.batch import NativeBatchProtocol
from protocol.common import ProtocolError, Upload
from protocol.container import AudioTooLong, ContainerDecoder
from protocol.deepgram_batch import DeepgramBatchProtocol
from protocol.openai_batch import ModelList, OpenAIBatchProtocol, model_list
from protocol.pcm import TARGET_RATE
from session.events import ErrorCode, Final, SessionEnd, SessionError
from transport.admission import Refusal, admit
from transport.capacity import Slot
from transport.context import ServerContext
from transport.multipart import FilePart, UploadBody, UploadLimits, iter_upload
from transport.recognition import open_recognizer

log = structlog.get_logger("sttd.batch")

# stt_batch_requests_total status of a request whose client disconnected before its answer
# (nginx's "client closed request"; never sent, there is nobody to send it to)
CLIENT_CLOSED = "499"

_ERRORS = {
    400: "Bad parameters or undecodable audio.",
    401: "Missing or wrong API key (when STT_AUTH_TOKENS is set).",
    408: "The upload stalled for STT_UPLOAD_IDLE_TIMEOUT_SEC, took longer than "
         "STT_UPLOAD_DEADLINE_SEC, or arrived slower than STT_UPLOAD_MIN_BYTES_PER_SEC "
         "(with audio slower than real time).",
    413: "Upload or audio duration over the limit.",
    415: "Not a media type or audio format the server decodes.",
    429: "Server full (OpenAI's endpoint: the SDK backs off and retries).",
    503: "Server full, not ready or draining.",
}


def openapi(protocol: Any) -> dict[str, Any]:
    """The operation's request body and responses, generated from the protocol's models."""
    form = protocol.form_model.model_json_schema()
    form["properties"]["file"] = {"type": "string", "format": "binary"}
    form["required"] = ["file", *form.get("required", [])]
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {
        "requestBody": {"required": True, "content": {
            "multipart/form-data": {"schema": form},
            "audio/*": binary, "application/octet-stream": binary,
        }},
        "responses": {
            "200": {"description": "The transcript.", "content": {
                media: ({"schema": protocol.response_model.model_json_schema()}
                        if media == "application/json" else {})
                for media in protocol.media_types}},
            **{str(status): {"description": text} for status, text in _ERRORS.items()
               if status != (503 if protocol.capacity_status == 429 else 429)},
        },
    }


def query_parameters(protocol: Any) -> list[dict[str, Any]]:
    """Native parameters may come in the query too."""
    schema = protocol.form_model.model_json_schema()
    return [{"name": name, "in": "query", "schema": prop,
             **({"description": prop["description"]} if "description" in prop else {})}
            for name, prop in schema["properties"].items()]


def attach(app: FastAPI) -> None:
    native, openai = NativeBatchProtocol(), OpenAIBatchProtocol()
    deepgram = DeepgramBatchProtocol()

    async def transcribe(request: Request) -> Response:
        return await serve_batch(request, native)

    async def audio_transcriptions(request: Request) -> Response:
        return await serve_batch(request, openai)

    async def listen(request: Request) -> Response:
        return await serve_batch(request, deepgram)

    async def models(request: Request) -> JSONResponse:
        ctx: ServerContext = request.app.state.ctx
        if not ctx.gate.authorised(request.headers, request.query_params, openai.credentials):
            return JSONResponse(openai.error_body(401, "unauthorized", "a valid API key is "
                                                  "required"), 401,
                                headers={"WWW-Authenticate": "Bearer"})
        return JSONResponse(model_list([ctx.backend.model]))

    native_api = openapi(native)
    native_api["parameters"] = query_parameters(native)
    app.add_api_route("/v1/stt/transcribe", transcribe, methods=["POST"],
                      openapi_extra=native_api, summary="Transcribe an audio file",
                      response_class=Response)
    app.add_api_route("/v1/audio/transcriptions", audio_transcriptions, methods=["POST"],
                      openapi_extra=openapi(openai), response_class=Response,
                      summary="Transcribe an audio file (OpenAI-compatible)")
    deepgram_api = openapi(deepgram)
    deepgram_api["parameters"] = query_parameters(deepgram)
    app.add_api_route("/v1/listen", listen, methods=["POST"], openapi_extra=deepgram_api,
                      response_class=Response,
                      summary="Transcribe an audio file (Deepgram-compatible pre-recorded)")
    app.add_api_route("/v1/models", models, methods=["GET"], summary="The served model",
                      responses={200: {"model": ModelList}})


def _error(ctx: ServerContext, protocol: Any, status: int, code: str, message: str,
           param: str | None = None, headers: dict[str, str] | None = None) -> Response:
    ctx.metrics.batch_requests.labels(str(status)).inc()
    custom = getattr(protocol, "error_response", None)  # a refusal that is not JSON (KGS)
    if custom is not None:
        return custom(status, code, message, headers)
    return JSONResponse(protocol.error_body(status, code, message, param), status_code=status,
                        headers=headers)


async def serve_batch(request: Request, protocol: Any) -> Response:
    ctx: ServerContext = request.app.state.ctx
    check = getattr(protocol, "check_request", None)  # parameters known before the body
    admitted = admit(ctx, protocol, request.headers, request.query_params,
                     check and (lambda: check(request.query_params, request.headers)))
    if isinstance(admitted, Refusal):
        return _error(ctx, protocol, admitted.status, admitted.code, admitted.message,
                      admitted.param, admitted.headers)
    slot, checked = admitted
    try:
        return await _transcribe(request, ctx, protocol, slot, checked)
    except ProtocolError as exc:
        return _error(ctx, protocol, protocol.status_for(exc.code), exc.code.value,
                      exc.message, exc.param)
    finally:
        if not getattr(slot, "streaming", False):
            ctx.slots.release(slot)


async def _transcribe(request: Request, ctx: ServerContext, protocol: Any,
                      slot: Slot, checked: Any = None) -> Response:
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
    work = asyncio.create_task(_recognise(request, ctx, protocol, slot, body, decoding,
                                          started, checked))
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


async def _recognise(request: Request, ctx: ServerContext, protocol: Any, slot: Slot,
                     body: UploadBody, decoding: list[ContainerDecoder],
                     started: float, checked: Any = None) -> Response:
    """``checked``: the parameters ``check_request`` returned before the body, when the
    protocol takes them from the request head only (KGS's caps in ``Content-Type``)."""
    s = ctx.settings

    def parse() -> Any:
        return checked if checked is not None else protocol.parse(fields)

    fields = query_fields(request.query_params)
    run: BatchRun | None = None
    decoder: Any = None
    digest = hashlib.sha256()
    try:
        async for part in iter_upload(request, body, fields,
                                      any_type=getattr(protocol, "any_body_is_audio", False)):
            assert isinstance(part, FilePart)
            params = parse()
            recognizer = await open_recognizer(ctx, params.options)
            run = BatchRun(ctx, recognizer)
            slot.job = run.job
            # Headerless audio is decoded as the request says (Deepgram's encoding=);
            # anything else is sniffed by FFmpeg.
            raw = getattr(params, "raw_decoder", None)
            decoder = raw() if raw is not None else None
            if decoder is None:
                decoder = ContainerDecoder(
                    "mp4" if part.is_mp4 else "auto", max_seconds=s.max_audio_seconds,
                    seekable=part.is_mp4,
                )
            decoding.append(decoder)
            async for chunk in part.chunks:
                digest.update(chunk)
                async for pcm in decoder.feed(chunk):
                    await run.feed(pcm)
        # The whole body has been read: a multipart body cut off before its closing boundary
        # was refused above, before the end of the audio is decoded as if it were complete.
        if run is None:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "no audio: send it as the body "
                                "(Content-Type audio/*) or as a multipart 'file' field")
        async for pcm in decoder.finish():
            await run.feed(pcm)
        params = parse()  # response_format may follow the file
        if params.stream:
            await run.end_of_input()
            events = _sse(ctx, protocol, params, run, slot, started)
            slot.streaming = True  # the stream releases the slot and closes the run
            run = None
            return StreamingResponse(events, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        finals = await run.finish()
    finally:
        if decoder is not None:
            decoder.close()
        if run is not None:
            run.disconnected = body.client_left
            run.close()
    duration_ms = run_samples_ms(run.samples)
    latency_ms = round((time.monotonic() - started) * 1000)
    ctx.metrics.batch_requests.labels("200").inc()
    log.info("batch.done", protocol=protocol.name, duration_ms=duration_ms,
             latency_ms=latency_ms, segments=len(finals))
    upload = Upload(digest.hexdigest(), ctx.backend.name, ctx.backend.model)
    rendered, media_type = protocol.render(params, finals, duration_ms, latency_ms, upload)
    return Response(rendered, media_type=media_type)


def query_fields(query) -> dict[str, Any]:
    """Query parameters by name; a name given more than once becomes a list."""
    fields: dict[str, Any] = {}
    for key, value in query.multi_items():
        if key in fields:
            held = fields[key]
            fields[key] = [*held, value] if isinstance(held, list) else [held, value]
        else:
            fields[key] = value
    return fields


def run_samples_ms(samples: int) -> int:
    return samples * 1000 // TARGET_RATE


async def _sse(ctx: ServerContext, protocol: Any, params: Any, run: BatchRun, slot: Slot,
               started: float) -> AsyncIterator[str]:
    """``stream=true``: one delta per segment as it is recognised, then the done event (or an
    error event: the SDK raises it). Ends the run and frees the slot however it stops."""
    finals: list[Final] = []
    try:
        try:
            async for final in run.finals():
                if final.text:
                    yield protocol.stream_delta(params, final, first=not finals)
                    finals.append(final)
        except ProtocolError as exc:
            ctx.metrics.batch_requests.labels(str(protocol.status_for(exc.code))).inc()
            yield protocol.stream_error(exc)
            return
        duration_ms = run_samples_ms(run.samples)
        ctx.metrics.batch_requests.labels("200").inc()
        log.info("batch.done", protocol=protocol.name, duration_ms=duration_ms,
                 latency_ms=round((time.monotonic() - started) * 1000),
                 segments=len(finals), stream=True)
        yield protocol.stream_done(finals, duration_ms)
    finally:
        run.disconnected = not run.completed
        run.close()
        ctx.slots.release(slot)


class BatchRun:
    """One upload's recognition on the shared inference pool: audio in with backpressure,
    finals out."""

    disconnected = False  # set when the client went away (the session is counted so)

    def __init__(self, ctx: ServerContext, recognizer) -> None:
        self._ctx = ctx
        recognizer.may_prepare = lambda: False  # an upload's finals have nobody waiting
        self.job = SessionJob(
            recognizer, schedule=ctx.bulk_batcher.schedule, metrics=ctx.metrics,
            sample_rate=TARGET_RATE, in_queue_ms=ctx.settings.in_queue_ms,
            out_queue_size=1 << 30,  # finals only: never shed
        )
        self.samples = 0
        self._max_samples = int(ctx.settings.max_audio_seconds * TARGET_RATE) or float("inf")
        self.completed = False
        self._closed = False

    async def feed(self, pcm: bytes) -> None:
        samples = len(pcm) // 2
        self.samples += samples
        if self.samples > self._max_samples:  # headerless audio has no decoder to count it
            raise AudioTooLong(self._ctx.settings.max_audio_seconds)
        self._ctx.metrics.audio_received.inc(samples / TARGET_RATE)
        await self.job.put(AudioChunk(pcm, time.monotonic()))

    async def end_of_input(self) -> None:
        await self.job.put(ControlItem(Control.EOS, time.monotonic()))

    async def finish(self) -> list[Final]:
        await self.end_of_input()
        return [final async for final in self.finals()]

    async def finals(self) -> AsyncIterator[Final]:
        """Each final as it is recognised (and rewritten by the post-processor, when one is
        configured), until the end; raises the session's error."""
        post = self._ctx.postprocessor
        async for event in self._events():
            if isinstance(event, Final):
                if post is not None:
                    event, _ = await post.rewrite(event)  # a failure is logged and counted
                yield event
            elif isinstance(event, SessionError):
                raise ProtocolError(event.code, event.message)
        self.completed = True

    async def _events(self) -> AsyncIterator:
        get = self.job.events.get
        while not isinstance(event := await get(), SessionEnd):
            yield event
            if isinstance(event, SessionError):
                return

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.job.close(cancelled=not self.completed)
        outcome = ("completed" if self.completed
                   else "disconnected" if self.disconnected else "error")
        self._ctx.metrics.sessions.labels(outcome).inc()
