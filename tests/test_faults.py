"""Faults in the recogniser: a hung backend call is caught by the pool's watchdog, fails only
its own session, and the other sessions keep being served."""

from __future__ import annotations

import asyncio
import threading

from tests.backends.conformance import FIXTURES
from tests.client import stream

CLIP = FIXTURES["ls_6930_75918_0000"]


async def test_a_hung_backend_call_fails_its_session_only(start_server):
    server = start_server(job_timeout_sec=1.0, inference_threads=2)
    backend = server.ctx.backend
    release = threading.Event()
    open_stream = backend.open_stream

    def opener(options):
        s = open_stream(options)
        if "hang" in options.hotwords:
            finalize = s.finalize
            s.finalize = lambda: (release.wait(30), finalize())[1]  # a model that stalls
        return s

    backend.open_stream = opener
    try:
        hung, healthy = await asyncio.gather(
            stream(server.ws_url(hotwords="hang"), CLIP.pcm(), wait_s=20),
            stream(server.ws_url(), CLIP.pcm(), realtime=2.0),
        )
        assert hung.messages[-1]["type"] == "error"
        assert hung.messages[-1]["code"] == "backend_error"
        assert "longer than 1 s" in hung.messages[-1]["message"] and hung.close_code == 1011
        assert healthy.text == CLIP.text and healthy.close_code == 1000
        # the stuck thread was replaced: full strength, and new sessions are served
        assert server.ctx.pool.alive == 2
        assert (await stream(server.ws_url(), CLIP.pcm())).text == CLIP.text
        m = server.metrics()
        assert m["stt_inference_timeouts_total"] == 1
        assert m['stt_errors_total{code="backend_error"}'] == 1
    finally:
        release.set()


class NeverReadingClient:
    """The server side of a socket whose client stopped reading: sends never complete."""

    def __init__(self, frames: list[bytes]) -> None:
        self._frames = list(frames)
        self.sent = 0

    async def receive(self) -> dict:
        if self._frames:
            return {"type": "websocket.receive", "bytes": self._frames.pop(0)}
        await asyncio.Event().wait()  # then nothing more (the client is stuck)

    async def send(self, message: dict) -> None:
        self.sent += 1
        if self.sent > 1:  # "ready" went out; the TCP window is full after that
            await asyncio.Event().wait()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await asyncio.Event().wait()


async def test_a_client_that_stops_reading_is_cut_off_without_blocking_inference(start_server):
    import dataclasses

    import structlog

    from inference.pool import LoopBatcher
    from protocol import native
    from session.events import Ready
    from session.options import RecognitionOptions
    from transport.live import LiveSession
    from transport.recognition import open_recognizer

    server = start_server(send_timeout_sec=0.5)
    pcm = CLIP.pcm().tobytes()
    ws = NeverReadingClient([pcm[i : i + 3200] for i in range(0, len(pcm), 3200)])

    async def run_session():
        # the server's context, with a batcher on this test's event loop
        ctx = dataclasses.replace(server.ctx, batcher=LoopBatcher(server.ctx.pool))
        recognizer = await open_recognizer(ctx, RecognitionOptions())
        wire = native.NativeProtocol().handshake(
            {"call_id": "slow", "sample_rate": "16000"}, {}, server.settings)
        live = LiveSession(ws, ctx, wire, recognizer, Ready("s", 16000, "mock", "m"),
                           structlog.get_logger())
        await asyncio.wait_for(live.run(), 10)
        return live

    live = await run_session()
    assert live.outcome == "error" and live.error_code.value == "slow_consumer"
    assert live.job.processed_samples == len(pcm) // 2  # inference went on regardless
    await asyncio.sleep(0.2)
    assert live.job.closed  # the stream was released
    assert server.metrics()['stt_errors_total{code="slow_consumer"}'] == 1


async def test_a_raising_backend_fails_its_session_with_1011_and_others_go_on(start_server):
    from backends.base import BackendError
    from tests.fakes import fail_finals

    server = start_server()
    fail_finals(server.ctx.backend, BackendError("model exploded"),
                when=lambda options: "explode" in options.hotwords)
    broken, healthy = await asyncio.gather(
        stream(server.ws_url(hotwords="explode"), CLIP.pcm()),
        stream(server.ws_url(), CLIP.pcm()),
    )
    assert broken.messages[-1]["code"] == "backend_error" and broken.close_code == 1011
    assert healthy.text == CLIP.text and healthy.close_code == 1000
    assert server.ctx.pool.alive == 2
    server.wait_for(lambda: server.metrics()["stt_active_sessions"] == 0)
    assert server.metrics()['stt_sessions_total{outcome="error"}'] == 1
