"""Upload bodies of POST /v1/stt/transcribe against a real uvicorn (mock backend): the time
limits (idle, deadline, minimum rate), multipart bodies cut off, clients that leave during or
after their upload, and the temp files of MP4 uploads."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import threading
import time

import httpx
import numpy as np
import pytest
from starlette.requests import ClientDisconnect

from tests.backends.conformance import FIXTURES
from tests.client import stream
from tests.media import encode, multipart, pcm_mov, silence_flac
from tests.test_batch import post, wav_bytes, words

CLIP = FIXTURES["lj_LJ001-0001"]
TURNS = FIXTURES["ep_ls_three_turns_pause4"]


def head(content_length: int, content_type: str = "audio/wav") -> bytes:
    return (f"POST /v1/stt/transcribe HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {content_length}\r\n\r\n").encode()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status_line = await reader.readline()
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", 0)))
    return int(status_line.split()[1]), body


async def drip(server, every: float, piece: bytes = b"\0", give_up_s: float = 20.0, *,
               pieces=None, content_type: str = "audio/wav"):
    """A body that trickles ``piece`` (or the next of ``pieces``) every ``every`` s until the
    server answers, reading meanwhile; returns (seconds until the answer, status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    loop = asyncio.get_running_loop()
    started = loop.time()
    writer.write(head(100_000_000, content_type) + (b"RIFF" if pieces is None else b""))
    pieces = iter(pieces) if pieces is not None else None
    response = asyncio.create_task(read_response(reader))
    try:
        while not response.done() and loop.time() - started < give_up_s:
            try:
                writer.write(piece if pieces is None else next(pieces, b""))
                await writer.drain()
            except ConnectionError:
                pass
            await asyncio.wait({response}, timeout=every)
        status, body = await asyncio.wait_for(response, 1)
        return loop.time() - started, status, body
    finally:
        writer.close()


def received_seconds(server) -> float:
    return server.metrics().get("stt_audio_received_seconds_total", 0.0)


class Records(logging.Handler):
    """Log records of the server (it runs in this process); attach after it starts, since
    configure_logging replaces the root handlers."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        logging.getLogger().addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def close(self) -> None:
        logging.getLogger().removeHandler(self)
        super().close()

    def errors(self) -> list[str]:
        return [self.format(r) for r in self.records if r.levelno >= logging.ERROR]

    def events(self, name: str) -> list[dict]:
        return [r.msg for r in self.records
                if isinstance(r.msg, dict) and r.msg.get("event") == name]


@pytest.fixture
def logs():
    handlers: list[Records] = []

    def attach() -> Records:
        handlers.append(Records())
        return handlers[-1]

    yield attach
    for h in handlers:
        h.close()


# -- time limits -----------------------------------------------------------------------------


async def test_drip_uploads_get_408_and_free_their_slots(start_server):
    """F3: two uploads dripping a byte every 0.2 s hold both slots only until the minimum rate
    applies (after the 1 s idle timeout), then get 408 and the server serves again."""
    server = start_server(max_sessions=2, upload_idle_timeout_sec=1.0,
                          upload_min_bytes_per_sec=1000)
    drips = [asyncio.create_task(drip(server, every=0.2)) for _ in range(2)]
    await asyncio.sleep(0.6)
    assert len(server.ctx.slots) == 2 and server.get("/ready")[0] == 503  # held meanwhile
    for elapsed, status, body in await asyncio.gather(*drips):
        assert status == 408, body
        error = httpx.Response(status, content=body).json()["error"]
        assert error["code"] == "upload_timeout" and "too slow" in error["message"], error
        assert 0.9 < elapsed < 3.0, elapsed
    server.wait_for(lambda: len(server.ctx.slots) == 0, timeout=2)
    assert server.get("/ready")[0] == 200
    result = await stream(server.ws_url(), CLIP.pcm(), frame_ms=100)
    assert result.close_code == 1000 and words(result.text) == words(CLIP.text)
    assert server.metrics()['stt_batch_requests_total{status="408"}'] == 2


async def test_an_upload_over_its_deadline_gets_408(start_server):
    server = start_server(upload_idle_timeout_sec=5, upload_min_bytes_per_sec=0,
                          upload_deadline_sec=1.0)
    elapsed, status, body = await drip(server, every=0.1, piece=b"\0" * 1000)
    assert status == 408, body
    error = httpx.Response(status, content=body).json()["error"]
    assert error["code"] == "upload_timeout" and "limit of 1 s" in error["message"], error
    assert 0.9 < elapsed < 3.0, elapsed
    server.wait_for(lambda: len(server.ctx.slots) == 0, timeout=2)


async def test_normal_uploads_pass_strict_time_limits(start_server):
    server = start_server(upload_idle_timeout_sec=0.5, upload_min_bytes_per_sec=1_000_000,
                          upload_deadline_sec=5)
    r = await post(server, content=wav_bytes(CLIP.pcm()), headers={"Content-Type": "audio/wav"})
    assert r.status_code == 200 and words(r.json()["text"]) == words(CLIP.text)
    body, content_type = multipart(wav_bytes(CLIP.pcm()), filename="a.wav")
    r = await post(server, content=body, headers={"Content-Type": content_type})
    assert r.status_code == 200 and words(r.json()["text"]) == words(CLIP.text)


async def test_a_live_capture_uploaded_at_real_time_is_not_too_slow(start_server):
    """Audio arriving at real time passes the minimum rate below its bytes: here MP3 at 8 KB/s
    against a minimum of 40 KB/s (as Opus at 2 KB/s does against the default 4 KB/s), as
    long as it averages an eighth of the minimum (5 KB/s here, 512 B/s by default)."""
    server = start_server(upload_idle_timeout_sec=2, upload_min_bytes_per_sec=40_000)
    data = encode(CLIP.pcm()[: 16000 * 4], "mp3_44k")
    step = len(data) // 40

    async def live():
        for i in range(0, len(data), step):  # 100 ms of audio every 100 ms
            yield data[i : i + step]
            await asyncio.sleep(0.1)

    r = await post(server, content=live(), headers={"Content-Type": "audio/mpeg"})
    assert r.status_code == 200, r.text
    assert abs(r.json()["duration_ms"] - 4000) < 100


async def test_real_time_silence_for_a_few_bytes_a_second_is_too_slow(start_server):
    """FLAC silence in 4 s frames is audio far faster than real time for a few bytes a second:
    the cheapest way to hold a slot with "live audio", refused by the byte floor (an eighth
    of the minimum: 5 KB/s here, 512 B/s by default)."""
    server = start_server(upload_idle_timeout_sec=1, upload_min_bytes_per_sec=40_960)
    data = silence_flac(3600)
    # 2500 bytes at once (FFmpeg probes 2 KB before it decodes; ~10 min of audio), then 10
    # bytes every 0.2 s: 50 B/s carrying ~3 min of audio a second
    pieces = [data[:2500]] + [data[i : i + 10] for i in range(2500, len(data), 10)]
    elapsed, status, body = await drip(server, 0.2, pieces=pieces, content_type="audio/flac")
    assert status == 408 and b"too slow" in body, body
    assert 0.9 < elapsed < 3.0, elapsed
    assert received_seconds(server) > 60  # it was decoded: real-time audio, and more


async def test_time_the_consumer_is_behind_is_not_the_clients():
    """The accounting itself (UploadBody on a fake ASGI channel): a consumer that takes 3 s
    over a body the client sent at once meets neither the 1 s deadline nor the 10 MB/s
    minimum; a client that pauses 0.3 s between chunks meets the 0.2 s idle limit."""
    from protocol.common import ProtocolError
    from transport.multipart import UploadBody, UploadLimits

    limits = UploadLimits(max_bytes=10**9, idle_timeout_s=0.2, min_bytes_per_sec=10**7,
                          deadline_s=1.0)

    def channel(pause: float):
        messages = [{"type": "http.request", "body": b"x" * 100_000, "more_body": i < 9}
                    for i in range(10)]

        async def receive():
            if not messages:
                await asyncio.Event().wait()  # connected, nothing more
            await asyncio.sleep(pause)
            return messages.pop(0)
        return receive

    body = UploadBody(channel(0), limits)
    reader = asyncio.create_task(body.run())
    got = 0
    async for chunk in body.chunks():
        got += len(chunk)
        await asyncio.sleep(0.3)  # recognition is behind
    assert got == 1_000_000 and not reader.done() and body.client_seconds < 0.2
    reader.cancel()

    body = UploadBody(channel(0.3), limits)
    reader = asyncio.create_task(body.run())
    with pytest.raises(ClientDisconnect):
        async for _ in body.chunks():
            pass
    with pytest.raises(ProtocolError, match="sent nothing for 0.2 s"):
        await reader


async def test_a_slow_backend_does_not_make_an_upload_too_slow(start_server):
    """Backpressure on a real server: while recognition is behind, the server does not read
    the upload; that time counts against neither the minimum rate nor the idle timeout."""
    server = start_server(mock_delay_ms=700, in_queue_ms=200, upload_idle_timeout_sec=0.3,
                          upload_min_bytes_per_sec=2_000_000)
    data = wav_bytes(TURNS.pcm())
    started = time.monotonic()
    r = await post(server, content=data, headers={"Content-Type": "audio/wav"})
    assert r.status_code == 200, r.text
    assert time.monotonic() - started > 1.4  # read at < 2 MB/s of wall time, and passed
    assert words(r.json()["text"]) == words(TURNS.text)


# -- bodies cut off --------------------------------------------------------------------------


async def test_a_multipart_body_cut_off_mid_file_is_400(server):
    body, content_type = multipart(wav_bytes(CLIP.pcm()), filename="a.wav")
    cut = body[: len(body) // 2]

    async def chunked():
        for i in range(0, len(cut), 16384):
            yield cut[i : i + 16384]

    for content in (cut, chunked()):  # Content-Length matching the cut body, and chunked
        r = await post(server, content=content, headers={"Content-Type": content_type})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "bad_request" and "cut off" in error["message"]
    # the closing boundary is all it takes
    r = await post(server, content=body, headers={"Content-Type": content_type})
    assert r.status_code == 200 and words(r.json()["text"]) == words(CLIP.text)
    assert server.metrics()['stt_batch_requests_total{status="400"}'] == 2


async def test_a_raw_body_shorter_than_its_content_length_is_counted_not_transcribed(
        start_server, logs):
    server = start_server(log_level="info")
    records = logs()
    data = wav_bytes(CLIP.pcm())
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head(len(data)) + data[: len(data) // 2])
        server.wait_for(lambda: received_seconds(server) > 0)
        sock.shutdown(socket.SHUT_WR)  # half the body, then gone
        sock.settimeout(5)
        assert sock.recv(1000) == b""  # no response: nobody to send one to
    server.wait_for(lambda: len(server.ctx.slots) == 0, timeout=2)
    m = server.metrics()
    assert m['stt_batch_requests_total{status="499"}'] == 1
    assert 'stt_batch_requests_total{status="200"}' not in m
    assert m['stt_sessions_total{outcome="disconnected"}'] == 1
    (gone,) = records.events("batch.client_gone")
    assert gone["during"] == "upload"
    assert records.errors() == []


# -- clients that leave after their upload ---------------------------------------------------


async def test_a_client_gone_after_its_upload_frees_slot_and_threads_at_once(start_server, logs):
    """Two hours of flat FLAC (25 KB; a DC level the energy VAD takes for speech, so 240
    segments at 0.2 s of mock compute each) take the server about a minute; the client closes
    right after sending it. Recognition stops within a second or two, not at the end."""
    server = start_server(max_sessions=1, log_level="info", mock_delay_ms=200)
    records = logs()
    r = await post(server, content=wav_bytes(CLIP.pcm()), headers={"Content-Type": "audio/wav"})
    assert r.status_code == 200  # warm: worker threads started
    threads = threading.active_count()
    data = silence_flac(2 * 3600, level=3000)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head(len(data), "audio/flac") + data)
        server.wait_for(lambda: received_seconds(server) > 30)
    closed = time.monotonic()
    server.wait_for(lambda: len(server.ctx.slots) == 0, timeout=5)
    assert time.monotonic() - closed < 2.0
    server.wait_for(lambda: threading.active_count() <= threads, timeout=2)
    m = server.metrics()
    assert m['stt_batch_requests_total{status="499"}'] == 1
    assert m['stt_sessions_total{outcome="disconnected"}'] == 1
    (gone,) = records.events("batch.client_gone")
    assert gone["during"] == "recognition" and gone["decoded_ms"] < 3600 * 1000, gone
    assert records.errors() == []
    assert server.get("/ready")[0] == 200


def _deleted_files() -> set[str]:
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.endswith("(deleted)"):
            out.add(f"{fd}:{target}")
    return out


async def test_mp4_uploads_that_end_early_leave_no_temp_files(start_server, logs):
    """MP4 bodies are spooled (their index is at the end); over 8 MB the spool is a deleted
    temp file, closed when the upload is aborted or its client leaves during decoding —
    not whenever the garbage collector runs (disabled here to tell)."""
    server = start_server(log_level="info")
    records = logs()
    gc.collect()
    gc.disable()
    try:
        before = _deleted_files()
        fake_mp4 = b"\0\0\0\x18ftypM4A \0\0\0\0M4A isom" + b"\0" * (9 * 1024 * 1024)
        for _ in range(3):  # aborted mid-body
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.sendall(head(12 * 1024 * 1024, "audio/mp4") + fake_mp4)
        server.wait_for(lambda: len(server.ctx.slots) == 0, timeout=5)
        # complete, then gone while the demuxer reads the spool
        movie = pcm_mov(np.zeros(16000 * 400, dtype=np.int16))  # 12.8 MB
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(head(len(movie), "audio/mp4") + movie)
            server.wait_for(lambda: received_seconds(server) > 0, timeout=10)
        server.wait_for(lambda: len(server.ctx.slots) == 0, timeout=5)
        server.wait_for(lambda: _deleted_files() <= before, timeout=3)
    finally:
        gc.enable()
    gone = records.events("batch.client_gone")
    assert [g["during"] for g in gone] == ["upload"] * 3 + ["recognition"]
    assert server.metrics()['stt_batch_requests_total{status="499"}'] == 4
    assert records.errors() == []


async def test_expect_100_continue_is_refused_before_the_body_when_too_large(server):
    """The body is read only once the request is checked: no ``100 Continue`` for a 413."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /v1/stt/transcribe HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"
                     b"Expect: 100-continue\r\nContent-Length: 999999999\r\n\r\n")
        sock.settimeout(5)
        first = sock.recv(100)
    assert first.startswith(b"HTTP/1.1 413"), first


async def test_a_refusal_before_the_body_is_read_is_answered(server):
    """A bad parameter is refused after the first chunk, while the body reader is waiting for
    the next: the reader must stop (asyncio.wait_for on 3.11 swallowed that cancellation
    when a message arrived at the same moment, and the request hung)."""
    data = wav_bytes(CLIP.pcm())  # 300 KB: several reads
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as client:
        for _ in range(3):
            r = await client.post("/v1/stt/transcribe", params={"language": "en;rm"},
                                  content=data, headers={"Content-Type": "audio/wav"})
            assert r.status_code == 400 and "language" in r.json()["error"]["message"]
