"""The engine side of the Qwen3-ASR backend: what one decode asks for, the narrow async
interface every engine offers (in-process vLLM, a remote ``vllm serve``, or a test fake), and
the thread that runs an engine on an event loop of its own.

Why a thread of its own: vLLM 0.25's ``AsyncLLM.add_request`` tokenises and computes the
log-mel features of the whole audio synchronously on the event loop it runs on. On the
server's loop that would stall every WebSocket; on its own loop it only delays other decodes.
Inference threads hand requests over with ``run_coroutine_threadsafe`` and get a
``concurrent.futures.Future``; cancelling that future cancels the request's task, and vLLM
aborts a request whose consumer is cancelled.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import structlog

from backends.qwen3_text import Tokenizer

log = structlog.get_logger("sttd.qwen3")
_STOP_GRACE = 10.0  # seconds cancelled decodes get to abort before the engine stops


@dataclass(frozen=True, slots=True)
class DecodeRequest:
    request_id: str  # unique per decode: engines key aborts and outputs by it
    audio: np.ndarray  # int16 mono 16 kHz (engines convert to what they send)
    context: str = ""  # system-turn background text (hotwords)
    language: str | None = None  # the model's language name when forced, else None
    prefix: str = ""  # forced start of the answer (the rollback prefix of streaming)
    max_tokens: int = 32
    want_confidence: bool = False  # ask for token log-probabilities


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str  # the generated continuation (after the prompt and the prefix)
    tokens: int = 0
    logprob: float | None = None  # sum over the generated tokens, when asked for


class Engine(Protocol):
    """One process-wide engine. ``start``, ``decode``, ``check_health`` and ``stop`` run on
    the engine thread's loop; ``decode`` must abort its request when cancelled."""

    name: str

    async def start(self) -> None: ...

    async def decode(self, request: DecodeRequest) -> Decoded: ...

    async def check_health(self) -> None: ...

    def tokenizer(self) -> Tokenizer: ...

    async def stop(self) -> None: ...


class EngineThread:
    """Runs an ``Engine`` on a daemon thread with its own asyncio loop."""

    def __init__(self, engine: Engine, name: str = "sttd-qwen3-engine") -> None:
        self.engine = engine
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def start(self, timeout: float | None = None) -> None:
        """Start the loop and the engine; raises what ``engine.start`` raised."""
        if self.running:
            return
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, args=(loop,), name=self._name,
                                        daemon=True)
        self._thread.start()
        try:
            self.call(self.engine.start, timeout)
            self.engine.tokenizer()  # fails here, not at the first session
        except BaseException:
            self.stop()  # what start() made (a client session, an EngineCore) is released
            raise

    def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.close()

    def submit(self, request: DecodeRequest) -> concurrent.futures.Future[Decoded]:
        """Thread-safe; cancel the future to abort the decode."""
        return self._run(self.engine.decode(request))

    def call(self, fn: Callable[[], Awaitable], timeout: float | None = None):
        """Run ``fn()`` on the engine loop and wait for its result."""
        return self._run(fn()).result(timeout)

    async def check_health(self) -> None:
        """From another event loop (``/ready``)."""
        if not self.running:
            raise RuntimeError("the engine thread is not running")
        await asyncio.wrap_future(self._run(self.engine.check_health()))

    def _run(self, coro) -> concurrent.futures.Future:
        loop = self._loop
        if loop is None or loop.is_closed() or self._stopping:
            coro.close()
            raise RuntimeError("the engine is not running")
        return asyncio.run_coroutine_threadsafe(coro, loop)

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel what is in flight, stop the engine (vLLM: its EngineCore process, so no GPU
        memory is left held), then the loop. Idempotent."""
        if not self.running:
            return
        try:
            self.call(self._stop_engine, timeout)
        except Exception:
            log.exception("qwen3.engine_stop_failed")
        self._stopping = True  # submissions from now on fail at once instead of hanging
        self._halt(timeout)

    async def _stop_engine(self) -> None:
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for task in tasks:
            task.cancel()
        try:
            if tasks:  # bounded: an abort that hangs must not keep the GPU memory held
                await asyncio.wait(tasks, timeout=_STOP_GRACE)
        finally:
            await self.engine.stop()

    def _halt(self, timeout: float = 30.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout)
