"""One accepted WebSocket session: a receive pump and a send pump around a ``SessionJob``.

The pumps are protocol-agnostic: a ``Wire`` supplies the text-frame parser, the event encoder
and the audio decoder. Everything on the per-frame path is kept small: validate, stamp, queue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import janus
import structlog
from starlette.websockets import WebSocket

from inference.job import AudioChunk, Control, ControlItem, SessionJob
from protocol.common import CLOSE_INTERNAL, CLOSE_NORMAL, Command, ProtocolError
from protocol.container import ContainerDecoder
from session.events import (
    AudioDropped,
    ErrorCode,
    Event,
    Final,
    Pong,
    Ready,
    SessionEnd,
    SessionError,
)
from session.recognizer import SegmentRecognizer
from transport.context import ServerContext


class Encoder(Protocol):
    def encode(self, event: Event) -> str | None: ...


class Decoder(Protocol):
    """Raw audio: each frame decodes on its own, synchronously."""

    def decode(self, frame: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


@dataclass
class Wire:
    """The protocol-specific parts of a session."""

    parse_text: Callable[[str], Command]
    encoder: Encoder
    decoder: Decoder | ContainerDecoder
    close_codes: dict[ErrorCode, int]


class LiveSession:
    def __init__(
        self,
        ws: WebSocket,
        ctx: ServerContext,
        wire: Wire,
        recognizer: SegmentRecognizer,
        ready: Ready,
        log: structlog.stdlib.BoundLogger,
    ) -> None:
        s = ctx.settings
        self._ws = ws
        self._ctx = ctx
        self._wire = wire
        self._ready = ready
        self._log = log
        self._rate = ready.sample_rate
        self._max_frame = s.max_frame_bytes
        self._max_drops = s.in_queue_max_drops
        self._max_samples = int(s.max_session_seconds * self._rate) or None
        self._idle = s.idle_timeout_sec
        self._send_timeout = s.send_timeout_sec
        self._log_transcripts = s.log_transcripts
        self._in: janus.Queue = janus.Queue(maxsize=s.in_queue_size)
        self._out: janus.Queue = janus.Queue()  # bounded by policy in SessionJob, not by size
        self.job = SessionJob(
            recognizer,
            in_queue=self._in,
            out_queue=self._out,
            out_queue_size=s.out_queue_size,
            schedule=ctx.batcher.schedule,
            metrics=ctx.metrics,
            sample_rate=self._rate,
        )
        self.received_samples = 0
        self.dropped_samples = 0
        self.dropped_frames = 0
        self._unreported_drop = 0
        self._warning_queued = False
        self._last_rx = 0.0
        self._idle_handle: asyncio.TimerHandle | None = None
        self.outcome = "disconnected"
        self.error_code: ErrorCode | None = None
        self._started = time.monotonic()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._last_rx = loop.time()
        self._idle_handle = loop.call_at(self._last_rx + self._idle, self._check_idle)
        self._out.async_q.put_nowait(self._ready)
        recv = asyncio.create_task(self._receive_pump())
        send = asyncio.create_task(self._send_pump())
        try:
            done, _ = await asyncio.wait({recv, send}, return_when=asyncio.FIRST_COMPLETED)
            if recv in done and recv.exception() is not None:
                self._log.warning("session.receive_failed", error=repr(recv.exception()))
            elif recv in done and recv.result() != "disconnect":
                # Flush finals (eos) or deliver the error, then close; bounded in case the
                # backend never answers.
                await asyncio.wait_for(send, timeout=self._idle)
        except TimeoutError:
            self._log.warning("session.flush_timeout")
        finally:
            for task in (recv, send):
                task.cancel()
            await asyncio.gather(recv, send, return_exceptions=True)
            self._idle_handle.cancel()
            self.job.cancelled = self.outcome != "completed"
            self.job.on_closed = self._finish
            dropped = self.job.offer(ControlItem(Control.CLOSE, time.monotonic()))
            if dropped is not None:
                self.job.discard(dropped)

    # -- receive -----------------------------------------------------------------------------

    async def _receive_pump(self) -> str:
        """Returns why reading stopped: disconnect, eos or error."""
        receive = self._ws.receive
        loop_time = asyncio.get_running_loop().time
        decoder = self._wire.decoder
        container = decoder if isinstance(decoder, ContainerDecoder) else None
        try:
            while True:
                msg = await receive()
                self._last_rx = loop_time()
                if msg["type"] == "websocket.disconnect":
                    return "disconnect"
                data = msg.get("bytes")
                if data is not None:
                    if data == b"EOS":  # kaldi-gstreamer clients may send EOS as binary
                        return await self._end_of_stream()
                    self._check_frame(data)
                    if container is None:
                        going = self._queue_pcm(decoder.decode(data)) if data else True
                    else:
                        going = True
                        async for pcm in container.feed(data):
                            going = going and self._queue_pcm(pcm)
                    if going:
                        continue
                    return "eos"
                text = msg.get("text")
                if text is None:
                    continue
                command = self._wire.parse_text(text)
                if command is Command.EOS:
                    return await self._end_of_stream()
                self._command(command)
        except ProtocolError as exc:
            self._fail(exc.code, exc.message)
            return "error"
        finally:
            if container is not None:
                container.close()

    def _check_frame(self, data: bytes) -> None:
        if len(data) > self._max_frame:
            raise ProtocolError(
                ErrorCode.FRAME_TOO_LARGE,
                f"frame of {len(data)} bytes exceeds the limit of {self._max_frame}",
            )

    async def _end_of_stream(self) -> str:
        """Decode what the decoder still holds, then finalize and end the session."""
        decoder = self._wire.decoder
        if isinstance(decoder, ContainerDecoder):
            async for pcm in decoder.finish():
                if not self._queue_pcm(pcm):
                    return "eos"  # the audio limit ended the session already
        elif not self._queue_pcm(decoder.flush()):
            return "eos"
        return self._command(Command.EOS)

    def _queue_pcm(self, pcm: bytes) -> bool:
        """Queue decoded audio; False when the session must stop reading."""
        if not pcm:
            return True  # empty frames are keep-alives
        samples = len(pcm) // 2
        self.received_samples += samples
        self._ctx.metrics.audio_received.inc(samples / self._rate)
        dropped = self.job.offer(AudioChunk(pcm, time.monotonic()))
        if dropped is not None:
            self._shed(len(dropped.data) // 2)
            if self.dropped_frames >= self._max_drops:
                raise ProtocolError(
                    ErrorCode.AUDIO_QUEUE_OVERFLOW,
                    f"server could not keep up: {self.dropped_frames} frames dropped",
                )
        if self._max_samples and self.received_samples >= self._max_samples:
            self.job.offer(ControlItem(Control.LIMIT, time.monotonic()))
            return False
        return True

    def _command(self, command: Command) -> str:
        if command is Command.PING:
            self._out.async_q.put_nowait(Pong())
            return "continue"
        kind = Control.COMMIT if command is Command.COMMIT else Control.EOS
        dropped = self.job.offer(ControlItem(kind, time.monotonic()))
        if dropped is not None:
            self._shed(len(dropped.data) // 2)
        return "continue" if kind is Control.COMMIT else "eos"

    def _shed(self, samples: int) -> None:
        self.dropped_samples += samples
        self.dropped_frames += 1
        self._unreported_drop += samples
        self._ctx.metrics.audio_dropped.labels("queue_full").inc(samples / self._rate)
        if not self._warning_queued:
            self._queue_warning()

    def _queue_warning(self) -> None:
        # One warning in flight at a time; it reports everything shed until it is sent.
        self._warning_queued = True
        self._out.async_q.put_nowait(AudioDropped(0, 0))

    def _fail(self, code: ErrorCode, message: str) -> None:
        self.error_code = code
        self.job.cancelled = True
        self._out.async_q.put_nowait(SessionError(code, message))

    def _check_idle(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = self._last_rx + self._idle
        if loop.time() < deadline:
            self._idle_handle = loop.call_at(deadline, self._check_idle)
        elif self.error_code is None:
            self._fail(ErrorCode.IDLE_TIMEOUT, f"no data for {self._idle:g} s")

    # -- send --------------------------------------------------------------------------------

    async def _send_pump(self) -> None:
        get = self._out.async_q.get
        encode = self._wire.encoder.encode
        send = self._ws.send
        try:
            while True:
                event = await get()
                if isinstance(event, SessionEnd):
                    self.outcome = "completed"
                    await self._ws.close(CLOSE_NORMAL)
                    return
                if isinstance(event, AudioDropped):
                    event = self._take_warning()
                text = encode(event)
                if text is not None:
                    try:
                        async with asyncio.timeout(self._send_timeout):
                            await send({"type": "websocket.send", "text": text})
                    except TimeoutError:
                        self._slow_consumer()
                        return
                if self._log_transcripts and isinstance(event, Final):
                    self._log.info("segment.final", segment_seq=event.segment_seq,
                                   reason=event.reason.value, text=event.text)
                if isinstance(event, SessionError):
                    self._error_sent(event)
                    code = self._wire.close_codes.get(event.code, CLOSE_INTERNAL)
                    await self._ws.close(code, reason=event.message[:120])
                    return
        except Exception as exc:  # the client went away mid-send
            self._log.debug("session.send_failed", error=type(exc).__name__)

    def _slow_consumer(self) -> None:
        """The client has not read for ``send_timeout``: partials were shed already, and
        finals would pile up without bound, so the session ends (inference never waited)."""
        self.outcome = "error"
        self.error_code = ErrorCode.SLOW_CONSUMER
        self._ctx.metrics.errors.labels(ErrorCode.SLOW_CONSUMER.value).inc()
        self._log.warning("session.slow_consumer", send_timeout_s=self._send_timeout,
                          events_waiting=self._out.async_q.qsize())

    def _take_warning(self) -> AudioDropped:
        ms = self._unreported_drop * 1000 // self._rate
        self._unreported_drop = 0
        self._warning_queued = False
        return AudioDropped(ms, self.dropped_samples * 1000 // self._rate)

    def _error_sent(self, event: SessionError) -> None:
        self.outcome = "error"
        self.error_code = event.code
        self._ctx.metrics.errors.labels(event.code.value).inc()

    # -- end ---------------------------------------------------------------------------------

    def _finish(self) -> None:
        """Runs on the inference thread once the stream is closed and every count is final."""
        self._ctx.metrics.sessions.labels(self.outcome).inc()
        job = self.job
        ms = 1000 / self._rate
        self._log.info(
            "session.closed",
            outcome=self.outcome,
            error_code=self.error_code.value if self.error_code else None,
            duration_s=round(time.monotonic() - self._started, 3),
            audio_received_ms=round(self.received_samples * ms),
            audio_processed_ms=round(job.processed_samples * ms),
            audio_dropped_ms=round((self.dropped_samples + job.discarded_samples) * ms),
            segments=job.segments,
            partials_dropped=job.partials_dropped,
        )
