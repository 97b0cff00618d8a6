"""Graceful shutdown: on SIGTERM or SIGINT, finish what was accepted before uvicorn closes
the connections.

uvicorn's own shutdown closes every WebSocket with 1012 at once, so the drain runs first,
from a signal handler chained in front of uvicorn's: ``/ready`` turns 503 and new sessions
and uploads are refused (503, ``Retry-After``) while the listener stays open; every live
session stops reading, recognises what it has, sends its open segment's final (``reason:
shutdown``), ``shutting_down`` and close 1012; running uploads are answered. When all are done,
or after ``STT_DRAIN_TIMEOUT_SEC``, uvicorn's handler runs and closes what is left. A
second signal skips the wait, a third uvicorn's too. Each ``--workers`` process drains itself
on the SIGTERM its supervisor forwards.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable

import structlog

from transport.context import ServerContext

log = structlog.get_logger("sttd")

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def drain(ctx: ServerContext, seconds: float) -> int:
    """Stop admitting, let every session finish within ``seconds``; returns how many were
    still open at the deadline."""
    started = time.monotonic()
    ctx.draining = True
    ctx.metrics.draining.set(1)
    open_at_start = len(ctx.slots)
    log.info("server.draining", sessions=open_at_start, timeout_s=seconds)
    for slot in ctx.slots:
        if slot.drain is not None:
            slot.drain()
    try:
        async with asyncio.timeout(seconds):
            await ctx.slots.wait_until_empty()
    except TimeoutError:
        pass
    left = len(ctx.slots)
    log.info("server.drained", sessions=open_at_start, left_open=left,
             duration_s=round(time.monotonic() - started, 3))
    return left


def install_signal_drain(ctx: ServerContext) -> Callable[[], None]:
    """Chain a drain in front of the current SIGTERM/SIGINT handlers (uvicorn's); returns a
    function that restores them. Does nothing off the main thread (a server run in a thread
    by tests installs no signal handlers either)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    state: dict[str, asyncio.Future | None] = {"task": None}

    def pass_on(sig: int) -> None:
        handler = previous[sig]
        server = getattr(handler, "__self__", None)
        if hasattr(server, "should_exit"):
            # uvicorn's Server: ask it to stop as its handler would, without it recording the
            # signal to re-raise at exit, so a drained server exits 0, not killed by SIGTERM.
            server.force_exit = server.should_exit  # asked again: stop waiting for anything
            server.should_exit = True
        elif callable(handler):
            handler(sig, None)
        elif handler == signal.SIG_DFL:
            signal.raise_signal(sig)  # nothing of uvicorn's to tell: default action

    async def drain_then_pass_on(sig: int) -> None:
        try:
            await drain(ctx, ctx.settings.drain_timeout_sec)
        finally:
            pass_on(sig)

    def on_signal(sig: int, frame) -> None:
        if state["task"] is not None:  # a second signal: stop waiting
            pass_on(sig)
            return
        # Python runs signal handlers between bytecodes of the main thread; the thread-safe
        # call also wakes the loop from its select().
        state["task"] = asyncio.Future(loop=loop)  # marks the drain as started
        loop.call_soon_threadsafe(lambda: loop.create_task(drain_then_pass_on(sig)))

    for sig in _SIGNALS:
        signal.signal(sig, on_signal)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
