"""One accepted WebSocket session: a receive pump and a send pump around a ``SessionJob``.

The pumps are protocol-agnostic: a ``Wire`` (one per session, from ``protocol/``) parses each
client frame into audio, a command or a reconfiguration, and encodes each internal event into
frames, ending with a close when the event ends the session. Everything on the per-frame path
is kept small: parse, decode, stamp, queue.

Ingest is lossless for clients ahead of real time: when the session's input buffer is full,
a client whose audio runs ahead of the wall clock (``session/pacing.py``) is simply not read
until there is room, so TCP flow control slows its sends; only a client at real-time pace,
which the server cannot keep up with, has its oldest audio shed (counted, and told).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Protocol

import structlog
from starlette.websockets import WebSocket

from inference.job import AudioChunk, Control, ControlItem, SessionJob
from protocol.common import (
    AudioIn,
    Close,
    Command,
    Configure,
    Inbound,
    Outbound,
    ProtocolError,
    close_for,
)
from session.events import (
    AudioDropped,
    ErrorCode,
    Event,
    Final,
    InputRejected,
    Pong,
    PostprocessFailed,
    Ready,
    SessionEnd,
    SessionError,
)
from session.pacing import IngestPace
from session.recognizer import SegmentRecognizer
from session.state import Lifecycle, SessionState
from transport.context import ServerContext

_MAX_PONGS_WAITING = 1000


class Decoder(Protocol):
    """Client audio in the session's format → pcm_s16le mono at the backend rate."""

    def feed(self, data: bytes) -> AsyncIterator[bytes]: ...

    def finish(self) -> AsyncIterator[bytes]: ...

    def close(self) -> None: ...


class Wire(Protocol):
    """One session of a wire protocol: what the pumps ask of it."""

    decoder: Decoder  # for the audio that starts the session

    def parse(self, frame: bytes | str) -> Inbound: ...

    def encode(self, event: Event) -> Outbound: ...


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
        self._post = ctx.postprocessor  # rewrites each final before it is encoded, or None
        self._decoder: Decoder = wire.decoder
        self._ready = ready
        self._log = log
        self._rate = ready.sample_rate
        self._max_frame = s.max_frame_bytes
        self._max_drop = s.in_queue_max_drop_ms * self._rate // 1000
        self._max_samples = int(s.max_session_seconds * self._rate) or None
        self._idle = s.idle_timeout_sec
        self._send_timeout = s.send_timeout_sec
        # After eos (or a drain) the backlog is recognised before the close: as long as the
        # watchdog lets a backend call run, whatever the idle timeout says.
        self._flush_timeout = max(self._idle, s.job_timeout_sec) + self._send_timeout
        self._log_transcripts = s.log_transcripts
        # A client this far ahead of real time waits for room instead of being shed; kept
        # below the buffer so a full buffer always tells the two kinds of client apart.
        self._tolerance = min(s.pace_tolerance_ms, s.in_queue_ms // 2) / 1000
        self._pace = IngestPace(self._rate)
        self.job = SessionJob(
            recognizer,
            schedule=ctx.batcher.schedule,
            metrics=ctx.metrics,
            sample_rate=self._rate,
            in_queue_ms=s.in_queue_ms,
            out_queue_size=s.out_queue_size,
            log=log,
        )
        # A guess at the final only helps while the rest of the pause is still to come: not
        # when the audio after it is already queued (a file sent faster than real time gets
        # the finals an upload gets), nor while live work waits for a thread.
        pool, job = ctx.pool, self.job
        recognizer.may_prepare = lambda: not (pool.work_waiting or job.input_waiting)
        self.lifecycle = Lifecycle()
        self.received_samples = 0
        self.dropped_samples = 0
        self.held_seconds = 0.0
        self._unreported_drop = 0
        self._warning_queued = False
        self._pongs_waiting = 0
        self._last_rx = 0.0
        self._holding = False  # the receive pump waits for room: the client is not idle
        self._in_receive = False  # the receive pump awaits the socket (safe to cancel)
        self._drain_requested = False
        self._recv_task: asyncio.Task | None = None
        self._idle_handle: asyncio.TimerHandle | None = None
        self.error_code: ErrorCode | None = None
        self._started = time.monotonic()

    @property
    def outcome(self) -> str:
        return self.lifecycle.outcome

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._last_rx = loop.time()
        self._idle_handle = loop.call_at(self._last_rx + self._idle, self._check_idle)
        self.job.tell(self._ready)
        recv = self._recv_task = asyncio.create_task(self._receive_pump())
        send = asyncio.create_task(self._send_pump())
        try:
            done, _ = await asyncio.wait({recv, send}, return_when=asyncio.FIRST_COMPLETED)
            self._idle_handle.cancel()  # reading is over: a flush is not the client idling
            if recv in done and (recv.cancelled() or recv.result() == "drain"):
                await self._finish_for_shutdown()
                await asyncio.wait_for(send, timeout=self._flush_timeout)
            elif recv in done and recv.exception() is not None:
                self._log.warning("session.receive_failed", error=repr(recv.exception()))
            elif recv in done and recv.result() != "disconnect":
                # Flush finals (eos) or deliver the error, then close; bounded in case the
                # backend never answers.
                await asyncio.wait_for(send, timeout=self._flush_timeout)
        except TimeoutError:
            self._log.warning("session.flush_timeout")
        finally:
            for task in (recv, send):
                task.cancel()
            await asyncio.gather(recv, send, return_exceptions=True)
            self._idle_handle.cancel()
            self._decoder.close()  # stop a container's demuxer thread wherever it is
            self.lifecycle.close(self._drain_requested)
            self.job.close(cancelled=self.outcome not in ("completed", "drained"),
                           on_closed=self._finish)

    def drain(self) -> None:
        """The server is shutting down: stop reading, recognise everything accepted, send the
        open segment's final (``reason: shutdown``), then ``shutting_down`` and close 1012."""
        if self._drain_requested or self._recv_task is None:
            return
        self._drain_requested = True
        if self._in_receive:  # between frames: nothing in hand, stop now
            self._recv_task.cancel()
        # Otherwise the pump finishes the frame in hand (it may be waiting for room) and
        # stops before reading the next.

    async def _finish_for_shutdown(self) -> None:
        state = self.lifecycle.state
        if state is SessionState.FAILED or state is SessionState.ENDED:
            return  # the session had already failed (or ended): that is on its way
        self.lifecycle.to(SessionState.DRAINING)
        await self._flush_decoder()
        self.job.offer(ControlItem(Control.SHUTDOWN, time.monotonic()))

    # -- receive -----------------------------------------------------------------------------

    async def _receive_pump(self) -> str:
        """Returns why reading stopped: disconnect, eos, error or drain."""
        receive = self._ws.receive
        parse = self._wire.parse
        loop_time = asyncio.get_running_loop().time
        try:
            while not self._drain_requested:
                self._in_receive = True
                try:
                    msg = await receive()
                finally:
                    self._in_receive = False
                self._last_rx = loop_time()
                if msg["type"] == "websocket.disconnect":
                    return "disconnect"
                frame = msg.get("bytes")
                if frame is None:
                    frame = msg.get("text")
                    if frame is None:
                        continue
                else:
                    self._check_frame(frame)
                try:
                    inbound = parse(frame)
                except ProtocolError as exc:
                    if exc.fatal:
                        raise
                    self.job.tell(InputRejected(exc.code, exc.message, exc.detail,
                                                exc.event_id, exc.param))
                    continue
                if type(inbound) is AudioIn:  # the hot path: one check per audio frame
                    if not await self._queue_audio(inbound.data):
                        return "eos"
                elif inbound is Command.EOS:
                    return await self._end_of_stream()
                elif inbound is not None:
                    await self._act(inbound)
            return "drain"
        except ProtocolError as exc:
            self._fail(exc.code, exc.message)
            return "error"
        finally:
            if not self._drain_requested:
                self._decoder.close()

    def _check_frame(self, data: bytes) -> None:
        if len(data) > self._max_frame:
            raise ProtocolError(
                ErrorCode.FRAME_TOO_LARGE,
                f"frame of {len(data)} bytes exceeds the limit of {self._max_frame}",
            )

    async def _queue_audio(self, data: bytes) -> bool:
        """Decode and queue one frame of client audio; False when the session must stop."""
        if not data:
            return True  # empty frames are keep-alives
        if len(data) > self._max_frame:
            self._check_frame(data)  # JSON-carried audio is bounded like a binary frame
        going = True
        async for pcm in self._decoder.feed(data):
            going = going and await self._queue_pcm(pcm)
        return going

    async def _act(self, inbound: Command | Configure) -> None:
        if inbound is Command.PING:
            # A client that pings without reading would queue pongs until slow_consumer
            # (the probe: +29 MB in 10 s); past this many unsent, pings go unanswered.
            if self._pongs_waiting < _MAX_PONGS_WAITING:
                self._pongs_waiting += 1
                self.job.tell(Pong())
        elif inbound is Command.COMMIT:
            self.job.offer(ControlItem(Control.COMMIT, time.monotonic()))
        elif inbound is Command.CLEAR:
            self.job.offer(ControlItem(Control.CLEAR, time.monotonic()))
        elif isinstance(inbound, Configure):
            if inbound.decoder is not None:  # the audio format changes from the next frame
                await self._flush_decoder()  # (and closes it)
                self._decoder = inbound.decoder
            self.job.offer(ControlItem(Control.CONFIGURE, time.monotonic(), inbound.options))

    async def _flush_decoder(self) -> bool:
        """Queue what the decoder still holds; False when the audio limit ended the session."""
        try:
            async for pcm in self._decoder.finish():
                if not await self._queue_pcm(pcm):
                    return False
            return True
        except ProtocolError as exc:
            self._fail(exc.code, exc.message)
            return False
        finally:
            self._decoder.close()

    async def _end_of_stream(self) -> str:
        """Decode what the decoder still holds, then finalize and end the session."""
        if not await self._flush_decoder():
            return "eos"  # the audio limit (or a decoding error) ended the session already
        self.lifecycle.to(SessionState.FINISHING)
        self.job.offer(ControlItem(Control.EOS, time.monotonic()))
        return "eos"

    async def _queue_pcm(self, pcm: bytes) -> bool:
        """Queue decoded audio, losslessly for a client ahead of real time; False when the
        session must stop reading."""
        if not pcm:
            return True
        samples = len(pcm) // 2
        self.received_samples += samples
        self._ctx.metrics.audio_received.inc(samples / self._rate)
        now = time.monotonic()
        ahead = self._pace.received(samples, now)
        job = self.job
        if not job.fits(samples) and ahead > self._tolerance:
            now = await self._hold(samples)
        shed = job.offer(AudioChunk(pcm, now))
        if shed:
            self._shed(shed)
            if self.dropped_samples >= self._max_drop:
                raise ProtocolError(
                    ErrorCode.AUDIO_QUEUE_OVERFLOW,
                    "server could not keep up: "
                    f"{self.dropped_samples * 1000 // self._rate} ms of audio dropped",
                )
        if self._max_samples and self.received_samples >= self._max_samples:
            if self.lifecycle.reading:
                self.lifecycle.to(SessionState.FINISHING)
            job.offer(ControlItem(Control.LIMIT, time.monotonic()))
            return False
        return True

    async def _hold(self, samples: int) -> float:
        """Stop reading the socket until the buffer has room (the client is ahead of real
        time: slowed down by TCP, never shed). Returns when the audio is taken."""
        self._holding = True
        started = time.monotonic()
        try:
            await self.job.wait_for_room(samples)
        finally:
            self._holding = False
            now = time.monotonic()
            self.held_seconds += now - started
            self._ctx.metrics.ingest_held.inc(now - started)
            self._last_rx = asyncio.get_running_loop().time()
        return now

    def _shed(self, samples: int) -> None:
        self.dropped_samples += samples
        self._unreported_drop += samples
        self._ctx.metrics.audio_dropped.labels("queue_full").inc(samples / self._rate)
        if not self._warning_queued:
            self._queue_warning()

    def _queue_warning(self) -> None:
        # One warning in flight at a time; it reports everything shed until it is sent.
        self._warning_queued = True
        self.job.tell(AudioDropped(0, 0))

    def _fail(self, code: ErrorCode, message: str) -> None:
        if self.lifecycle.state in (SessionState.FAILED, SessionState.ENDED,
                                    SessionState.CLOSED):
            return
        self.lifecycle.to(SessionState.FAILED)
        self.error_code = code
        self.job.cancelled = True
        self.job.tell(SessionError(code, message))

    def _check_idle(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = self._last_rx + self._idle
        if self._holding or loop.time() < deadline:  # holding: the server is not reading
            self._idle_handle = loop.call_at(max(deadline, loop.time() + 1), self._check_idle)
        else:
            self._fail(ErrorCode.IDLE_TIMEOUT, f"no data for {self._idle:g} s")

    # -- send --------------------------------------------------------------------------------

    async def _send_pump(self) -> None:
        get = self.job.events.get
        encode = self._wire.encode
        send = self._ws.send
        try:
            while True:
                event = await get()
                if isinstance(event, AudioDropped):
                    event = self._take_warning()
                elif isinstance(event, Pong):
                    self._pongs_waiting -= 1
                outbound = None
                if isinstance(event, Final) and self._post is not None:
                    event, failed = await self._post.rewrite(event, self._ready.session_id)
                    if failed is not None:  # told first, then the final as the backend gave it
                        outbound = (*encode(PostprocessFailed(event.segment_seq, failed)),
                                    *encode(event))
                for frame in outbound if outbound is not None else encode(event):
                    if isinstance(frame, Close):
                        await self._end(event, frame)
                        return
                    try:
                        async with asyncio.timeout(self._send_timeout):
                            await send({"type": "websocket.send", "text": frame})
                    except TimeoutError:
                        self._slow_consumer()
                        return
                if self._log_transcripts and isinstance(event, Final):
                    self._log.info("segment.final", segment_seq=event.segment_seq,
                                   reason=event.reason.value, text=event.text)
                if isinstance(event, SessionEnd | SessionError):  # an encoder that forgot
                    await self._end(event, close_for(event) if isinstance(event, SessionError)
                                    else Close(1000))
                    return
        except Exception as exc:  # the client went away mid-send
            self._log.debug("session.send_failed", error=type(exc).__name__)

    async def _end(self, event: Event, close: Close) -> None:
        """The session's last message is out: record how it ended, then close."""
        if isinstance(event, SessionError):
            self.error_code = event.code
            if event.code is ErrorCode.SHUTTING_DOWN:
                self.lifecycle.ended("drained")  # a deliberate end, not a failure
            else:
                self.lifecycle.ended("error")
                self._ctx.metrics.errors.labels(event.code.value).inc()
        else:
            self.lifecycle.ended("completed")
        await self._ws.close(close.code, reason=close.reason)

    def _slow_consumer(self) -> None:
        """The client has not read for ``send_timeout``: partials were shed already, and
        finals would pile up without bound, so the session ends (inference never waited)."""
        self.error_code = ErrorCode.SLOW_CONSUMER
        self.lifecycle.ended("error")
        self._ctx.metrics.errors.labels(ErrorCode.SLOW_CONSUMER.value).inc()
        self._log.warning("session.slow_consumer", send_timeout_s=self._send_timeout,
                          events_waiting=self.job.output_depth)

    def _take_warning(self) -> AudioDropped:
        ms = self._unreported_drop * 1000 // self._rate
        self._unreported_drop = 0
        self._warning_queued = False
        return AudioDropped(ms, self.dropped_samples * 1000 // self._rate)

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
            held_ms=round(self.held_seconds * 1000),
            max_ahead_ms=round(self._pace.max_ahead * 1000),
            segments=job.segments,
            partials_dropped=job.partials_dropped,
        )
