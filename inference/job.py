"""One session's unit of work for the inference pool, and the two janus queues it owns.

The event loop offers audio and controls on the input queue, which is bounded in audio
duration: the caller either waits for room (a client ahead of real time, an upload) or lets
the oldest audio be shed (a live client the server cannot keep up with). An inference thread
drains everything queued in one go, runs the recognizer, and puts events on the output
queue, shedding partials when the client reads slowly but never a final, and never blocking.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import janus
import numpy as np
import structlog

from backends.base import BackendError
from observability.metrics import Metrics
from session.events import (
    Cleared,
    Committed,
    Configured,
    ErrorCode,
    Event,
    Final,
    FinalReason,
    InputRejected,
    Partial,
    SegmentFailed,
    SessionEnd,
    SessionError,
)
from session.recognizer import SegmentRecognizer

logger = structlog.get_logger("sttd.inference")


class Next(Enum):
    """What the pool does with a job after running it."""

    IDLE = "idle"  # nothing queued: forget it until new input arrives
    AGAIN = "again"  # input arrived meanwhile: queue it for another run
    PARTIAL = "partial"  # a partial is due: park it in the low-priority partial queue


class _State(Enum):
    IDLE = 0
    SCHEDULED = 1  # in the pool's work queue, or running
    PARKED = 2  # waiting in the partial queue; new input promotes it back to SCHEDULED


class Control(Enum):
    COMMIT = "commit"  # finalize the open segment, keep going
    CLEAR = "clear"  # forget the open segment, keep going
    CONFIGURE = "configure"  # new recognition options (the payload) from here on
    EOS = "eos"  # finalize, then end the session normally
    SHUTDOWN = "shutdown"  # the server is draining: finalize, then end with shutting_down
    LIMIT = "limit"  # finalize, then end the session: it ran out of allowed audio
    CLOSE = "close"  # the client is gone: release the stream, discard what is queued


@dataclass(frozen=True, slots=True)
class AudioChunk:
    data: bytes  # pcm_s16le at the backend rate
    received_at: float


@dataclass(frozen=True, slots=True)
class ControlItem:
    kind: Control
    received_at: float
    payload: object = None  # CONFIGURE: the RecognitionOptions


Item = AudioChunk | ControlItem


class SessionJob:
    def __init__(
        self,
        recognizer: SegmentRecognizer,
        *,
        schedule: Callable[[SessionJob], None],
        metrics: Metrics,
        sample_rate: int = 16000,
        in_queue_ms: int = 5000,
        out_queue_size: int = 50,
        log: structlog.stdlib.BoundLogger | None = None,
    ) -> None:
        self._rec = recognizer
        self._in: janus.Queue[Item] = janus.Queue()  # bounded in samples, below
        self._out: janus.Queue[Event] = janus.Queue()  # bounded by policy in _emit
        self._capacity = max(1, in_queue_ms * sample_rate // 1000)
        self._queued = 0  # samples in the input queue (under the lock)
        self._partial_cutoff = max(1, out_queue_size * 8 // 10)
        self._schedule = schedule
        self._metrics = metrics
        self._rate = sample_rate
        self._log = log or logger
        self._lock = threading.Lock()
        self._state = _State.IDLE
        self._rescued: list[ControlItem] = []  # controls popped by drop-oldest, kept in order
        self._poked = False  # a backend result landed while the job was scheduled
        self._finished = False  # no more audio will be recognised
        self._room: asyncio.Event | None = None  # set when a waiting producer may go on
        self.cancelled = False  # set by the event loop when the client is gone
        self.closed = False
        self.partials_dropped = 0
        self.discarded_samples = 0
        self.segments = 0
        self.on_closed: Callable[[], None] | None = None  # called once the stream is released
        self._loop: asyncio.AbstractEventLoop | None
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:  # built off the loop (unit tests): nothing to wake
            self._loop = None
        else:
            loop = self._loop
            recognizer.on_backend_result(lambda: _call_soon(loop, self.poke))
        recognizer.early = self._emit

    @property
    def processed_samples(self) -> int:
        return self._rec.processed_samples

    @property
    def input_depth(self) -> int:
        return self._in.async_q.qsize()

    @property
    def input_waiting(self) -> bool:
        """Audio already here that the recognizer has not taken (from the inference thread)."""
        return self._in.sync_q.qsize() > 0

    @property
    def queued_samples(self) -> int:
        return self._queued

    @property
    def output_depth(self) -> int:
        return self._out.async_q.qsize()

    @property
    def events(self) -> janus.AsyncQueue[Event]:
        """What the send side reads: every event, in order."""
        return self._out.async_q

    def tell(self, event: Event) -> None:
        """Queue an event from the event loop (ready, pong, a protocol error)."""
        self._out.async_q.put_nowait(event)

    # -- event-loop side -------------------------------------------------------------------

    def fits(self, samples: int) -> bool:
        """Would ``samples`` more audio fit the input bound now? (An empty queue takes any
        piece, however large, so nothing can wait forever.)"""
        queued = self._queued
        return queued == 0 or queued + samples <= self._capacity

    def offer(self, item: Item) -> int:
        """Queue audio or a control without waiting; returns how many samples of the oldest
        queued audio were shed to make room.

        Controls are never shed: one popped to make room is kept aside, in order, and runs
        before everything still queued.
        """
        shed = 0
        q = self._in.async_q
        with self._lock:
            if isinstance(item, AudioChunk):
                samples = len(item.data) // 2
                while self._queued and self._queued + samples > self._capacity:
                    oldest = q.get_nowait()
                    if isinstance(oldest, AudioChunk):
                        n = len(oldest.data) // 2
                        self._queued -= n
                        shed += n
                    elif not self._rescued or self._rescued[-1].kind is not oldest.kind:
                        self._rescued.append(oldest)  # a repeat with no audio between: no-op
                self._queued += samples
            q.put_nowait(item)
            wake = self._state is not _State.SCHEDULED  # a parked job is promoted
            self._state = _State.SCHEDULED
        if wake:
            self._schedule(self)
        return shed

    async def wait_for_room(self, samples: int) -> None:
        """Until ``samples`` fit (the producer is slowed down, nothing is shed), or the job
        can take no more input."""
        while not (self.fits(samples) or self._finished or self.closed):
            with self._lock:
                if self.fits(samples):
                    return
                self._room = room = asyncio.Event()
            await room.wait()

    async def put(self, item: Item) -> None:
        """Queue without shedding, waiting for room: for input the producer can slow down
        (an upload, a client ahead of real time)."""
        if isinstance(item, AudioChunk):
            await self.wait_for_room(len(item.data) // 2)
        self.offer(item)

    def poke(self) -> None:
        """The backend finished work on its own (a GPU partial): run the job to collect it."""
        if not self.closed:
            self._make_ready(poked=True)

    def _make_ready(self, poked: bool = False) -> None:
        with self._lock:
            wake = self._state is not _State.SCHEDULED
            # Queued or running already: a poke makes its settling run it once more (new
            # input needs no flag, settling sees the queue).
            self._poked |= poked and not wake
            self._state = _State.SCHEDULED
        if wake:
            self._schedule(self)

    # -- inference-thread side -------------------------------------------------------------

    def run(self) -> Next:
        """Recognise everything queued (VAD, endpointing, finals). Partials are not computed
        here: a due partial parks the job, so finals of other sessions go first."""
        with self._lock:
            self._poked = False  # this run collects whatever has landed
            items: list[Item] = list(self._rescued)
            self._rescued.clear()
            q = self._in.sync_q
            for _ in range(q.qsize()):  # no other consumer: qsize items are there to take
                items.append(q.get_nowait())
            self._queued = 0
            room, self._room = self._room, None
        if room is not None:
            _call_soon(self._loop, room.set)
        if items:
            self._process(items)
        return self._settle(partial_due=self._partial_due())

    @property
    def partial_state(self) -> str:
        if self._state is _State.PARKED:
            return "parked"
        return "busy" if self._state is _State.SCHEDULED else "idle"

    def run_partial(self) -> Next:
        """Compute the parked partial on the latest audio; stale entries are skipped."""
        with self._lock:
            if self._state is not _State.PARKED:
                return Next.IDLE  # promoted by new input: the work queue has it already
            self._state = _State.SCHEDULED
            self._poked = False
        if self._partial_due():
            self._guarded(self._rec.maybe_partial)
        return self._settle(partial_due=False)

    def _partial_due(self) -> bool:
        return not (self._finished or self.cancelled) and self._rec.partial_due

    def _settle(self, partial_due: bool) -> Next:
        with self._lock:
            if self._rescued or self._in.sync_q.qsize() or self._poked:
                self._poked = False
                return Next.AGAIN
            if partial_due:
                self._state = _State.PARKED
                return Next.PARTIAL
            self._state = _State.IDLE
            return Next.IDLE

    def _process(self, items: list[Item]) -> None:
        before = self._rec.processed_samples
        for item in items:
            if isinstance(item, AudioChunk):
                if self._finished or self.cancelled:
                    self._discard(item)
                else:
                    pcm = np.frombuffer(item.data, dtype="<i2")
                    self._guarded(self._rec.feed, pcm, item.received_at)
            elif item.kind is Control.CLOSE:
                self._close()
            elif not (self._finished or self.cancelled):
                self._guarded(self._control, item)
        fed = self._rec.processed_samples - before
        if fed:
            self._metrics.audio_processed.inc(fed / self._rate)

    def _guarded(self, step, *args) -> None:
        """Run one recognition step and send its events, in order; a failure ends this
        session only, as an error event (retryable when the backend says so)."""
        try:
            events = step(*args)
        except BackendError as exc:
            seq = getattr(exc, "segment_seq", None)
            if seq is not None:
                self._emit(SegmentFailed(seq, str(exc)))
            events = [self._fail(ErrorCode.BACKEND_ERROR, f"recognition failed: {exc}",
                                 retryable=exc.retryable)]
        except Exception:
            self._log.exception("inference.session_failed")
            events = [self._fail(ErrorCode.INTERNAL_ERROR, "internal error in recognition")]
        for event in events:
            self._emit(event)

    def _control(self, item: ControlItem) -> list[Event]:
        rec = self._rec
        if item.kind is Control.COMMIT:
            audio_ms = rec.samples_since_commit * 1000 // self._rate
            events = rec.commit(item.received_at, FinalReason.COMMIT)
            closed = next((e.segment_seq for e in events if isinstance(e, Final)), None)
            events.append(Committed(closed, audio_ms))
            return events
        if item.kind is Control.CLEAR:
            rec.clear()
            return [Cleared()]
        if item.kind is Control.CONFIGURE:
            try:
                rec.reconfigure(item.payload)
            except BackendError as exc:  # e.g. a language this backend does not have
                return [InputRejected(ErrorCode.BAD_REQUEST, str(exc))]
            return [Configured(item.payload)]
        reason = FinalReason.SHUTDOWN if item.kind is Control.SHUTDOWN else FinalReason.EOS
        events = self._rec.commit(item.received_at, reason)
        self._finished = True
        if item.kind is Control.LIMIT:
            events.append(
                SessionError(ErrorCode.SESSION_TOO_LONG, "session reached its audio time limit")
            )
        elif item.kind is Control.SHUTDOWN:
            events.append(SessionError(ErrorCode.SHUTTING_DOWN,
                                       "the server is shutting down; reconnect to continue"))
        else:
            events.append(SessionEnd(self._rec.processed_samples * 1000 // self._rate))
        return events

    def _fail(self, code: ErrorCode, message: str, retryable: bool = False) -> SessionError:
        self._finished = True
        return SessionError(code, message, retryable)

    def time_out(self, seconds: float) -> None:
        """From the pool's watchdog thread: the backend call for this session hung. The
        session ends with an error now; whatever the stuck call returns later is dropped."""
        self.cancelled = True
        self._finished = True
        self._metrics.errors_timed_out.inc()
        try:
            self._out.sync_q.put_nowait(SessionError(
                ErrorCode.BACKEND_ERROR, f"recognition took longer than {seconds:g} s"))
        except (janus.SyncQueueShutDown, RuntimeError):
            pass

    def close(self, *, cancelled: bool, on_closed: Callable[[], None] | None = None) -> None:
        """From the event loop, once the client side is done: release the stream on the
        inference thread (after what is queued; discarded when ``cancelled``), then call
        ``on_closed`` there with every count final."""
        self.cancelled = cancelled
        self.on_closed = on_closed
        self.offer(ControlItem(Control.CLOSE, time.monotonic()))

    def _discard(self, chunk: AudioChunk) -> None:
        """Count audio that will never be recognised (the session ended or the client left)."""
        samples = len(chunk.data) // 2
        self.discarded_samples += samples
        reason = "disconnect" if self.cancelled else "session_ended"
        self._metrics.audio_dropped.labels(reason).inc(samples / self._rate)

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._finished = True
        try:
            self._rec.close()
        except Exception:
            self._log.exception("inference.stream_close_failed")
        if self.on_closed is not None:
            self.on_closed()

    def _emit(self, event: Event) -> None:
        if isinstance(event, Final):
            self._observe_final(event)
        q = self._out.sync_q
        if isinstance(event, Partial) and q.qsize() >= self._partial_cutoff:
            self.partials_dropped += 1
            self._metrics.partials_dropped.inc()
            return
        try:
            q.put_nowait(event)  # unbounded: a final is never dropped, inference never waits
        except (janus.SyncQueueShutDown, RuntimeError):
            pass  # the session is already gone

    def _observe_final(self, final: Final) -> None:
        self.segments += 1
        m = self._metrics
        m.segments.labels(final.reason.value).inc()
        m.final_latency.observe(final.latency_ms / 1000)
        if final.first_token_ms is not None:
            m.first_partial_latency.observe(final.first_token_ms / 1000)


def _call_soon(loop: asyncio.AbstractEventLoop | None, callback: Callable[[], None]) -> None:
    if loop is None:
        callback()  # no loop (unit tests): nobody to hand it to
        return
    try:
        loop.call_soon_threadsafe(callback)
    except RuntimeError:  # the loop is closed: the server is gone
        pass
