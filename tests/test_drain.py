"""Graceful drain: SIGTERM (or SIGINT) finishes every open segment and answers every running
upload before the server exits; nothing new is admitted meanwhile."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

import httpx
import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from config import REPO_ROOT
from tests.backends.conformance import FIXTURES
from tests.client import stream
from tests.server import drain, free_port
from tests.test_batch import wav_bytes
from tests.test_cli import BIN, wait_ready

CLIP = FIXTURES["lj_LJ001-0001"]  # 9.7 s of continuous speech: one long segment


async def live_session(url: str) -> dict:
    """Stream the clip at real time until the server ends the session; what came back."""
    t = await stream(url, CLIP.pcm(), frame_ms=100, realtime=1.0, wait_s=30)
    return {"messages": t.messages, "close": t.close_code}


def assert_drained(session: dict) -> None:
    kinds = [m["type"] for m in session["messages"]]
    finals = [m for m in session["messages"] if m["type"] == "final"]
    assert session["close"] == 1012, kinds
    assert [f["reason"] for f in finals][-1:] == ["shutdown"], kinds
    assert finals[-1]["text"], "the segment's speech so far is in the final"
    assert session["messages"][-1]["type"] == "error"
    assert session["messages"][-1]["code"] == "shutting_down"
    seqs = [m["seq"] for m in session["messages"]]
    assert seqs == list(range(1, len(seqs) + 1))


def long_wav(seconds: float) -> bytes:
    clip = CLIP.pcm()
    return wav_bytes(np.tile(clip, int(seconds * 16000 // clip.size) + 1)[: int(seconds * 16000)])


async def slow_upload(base: str, body: bytes, seconds: float) -> httpx.Response:
    """A chunked upload spread over ``seconds``: still running when the signal comes."""
    async def chunks():
        step = len(body) // 20
        for i in range(0, len(body), step):
            yield body[i : i + step]
            await asyncio.sleep(seconds / 20)

    async with httpx.AsyncClient(timeout=60) as client:
        return await client.post(f"{base}/v1/stt/transcribe", content=chunks(),
                                 headers={"Content-Type": "audio/wav"})


async def test_drain_in_process_finishes_segments_and_refuses_newcomers(start_server):
    server = start_server(drain_timeout_sec=10)
    sessions = [asyncio.create_task(live_session(server.ws_url(call_id=f"d{i}")))
                for i in range(4)]
    await asyncio.sleep(2.5)  # mid-speech
    result: dict = {}
    drainer = threading.Thread(target=lambda: result.setdefault("left", drain(server, 10)))
    drainer.start()
    await asyncio.to_thread(server.wait_for, lambda: server.ctx.draining)
    status, body = server.get("/ready")
    assert status == 503 and json.loads(body)["status"] == "draining"
    try:
        async with connect(server.ws_url(call_id="late")):
            raise AssertionError("admitted while draining")
    except InvalidStatus as exc:
        assert exc.response.status_code == 503
        assert exc.response.headers["Retry-After"] == "1"
    done = await asyncio.gather(*sessions)
    drainer.join(15)
    assert result["left"] == 0
    for session in done:
        assert_drained(session)
    m = server.metrics()
    assert m['stt_sessions_total{outcome="drained"}'] == 4
    assert m['stt_segments_total{reason="shutdown"}'] == 4
    assert m['stt_rejections_total{reason="draining"}'] >= 1


def test_sigterm_with_32_sessions_and_2_uploads(tmp_path):
    """The real process and the real signal: every session gets its final and 1012 within
    the deadline, both uploads their 200, /ready is 503 from the signal on, exit 0."""
    port = free_port()
    log = (tmp_path / "server.log").open("w+")
    env = {"STT_BACKEND": "mock", "STT_VAD": "energy", "STT_LOG_LEVEL": "info",
           "STT_DRAIN_TIMEOUT_SEC": "20", "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([BIN / "sttd", "serve", "--port", str(port)], cwd=REPO_ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(port, proc)
        base = f"http://127.0.0.1:{port}"
        url = f"ws://127.0.0.1:{port}/v1/stt/ws?sample_rate=16000&call_id="
        body = long_wav(60)

        async def scenario():
            sessions = [asyncio.create_task(live_session(url + f"s{i}")) for i in range(32)]
            uploads = [asyncio.create_task(slow_upload(base, body, 4.0)) for _ in range(2)]
            await asyncio.sleep(3.0)
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.2)
            ready = await asyncio.to_thread(_status, f"{base}/ready")
            results = await asyncio.gather(*sessions)
            responses = await asyncio.gather(*uploads)
            return ready, results, responses, time.monotonic() - signalled

        ready, results, responses, took = asyncio.run(scenario())
        assert ready == 503
        for session in results:
            assert_drained(session)
        assert [r.status_code for r in responses] == [200, 200]
        assert all(r.json()["duration_ms"] == 60000 for r in responses)
        assert took < 20
        assert proc.wait(30) == 0
        log.seek(0)
        lines = [json.loads(line) for line in log if line.startswith("{")]
        closed = [entry for entry in lines if entry.get("event") == "session.closed"]
        assert len(closed) == 32 and {c["outcome"] for c in closed} == {"drained"}
        assert any(entry.get("event") == "server.drained" and entry["left_open"] == 0
                   for entry in lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_drains_every_worker():
    port = free_port()
    env = {"STT_BACKEND": "mock", "STT_VAD": "energy", "STT_LOG_LEVEL": "warning",
           "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([BIN / "sttd", "serve", "--port", str(port), "--workers", "2"],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, proc, timeout=60)
        url = f"ws://127.0.0.1:{port}/v1/stt/ws?sample_rate=16000&call_id="

        async def scenario():
            sessions = [asyncio.create_task(live_session(url + f"w{i}")) for i in range(12)]
            await asyncio.sleep(3.0)
            proc.send_signal(signal.SIGTERM)
            return await asyncio.gather(*sessions)

        for session in asyncio.run(scenario()):
            assert_drained(session)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


async def test_sessions_still_busy_at_the_deadline_are_closed_1012_and_counted(start_server):
    # Every backend call takes 3 s: the drain's final cannot be ready within 0.5 s.
    server = start_server(mock_delay_ms=3000, inference_threads=1)
    session = asyncio.create_task(live_session(server.ws_url(call_id="slow")))
    await asyncio.sleep(1.5)
    left = await asyncio.to_thread(drain, server, 0.5)
    assert left == 1
    await asyncio.to_thread(server.stop)  # uvicorn's own shutdown: what is left gets 1012
    result = await session
    assert result["close"] == 1012
    assert not [m for m in result["messages"] if m.get("reason") == "shutdown"]
    assert server.ctx.metrics.sessions.labels("drain_timeout")._value.get() == 1
