"""Limits and bad input: each gets a clear answer, and the server keeps serving."""

import asyncio
import json

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.backends.conformance import FIXTURES
from tests.client import stream


async def refused(url: str) -> tuple[int, dict]:
    with pytest.raises(InvalidStatus) as err:
        async with connect(url):
            pass
    response = err.value.response
    return response.status_code, json.loads(response.body)


async def error_and_close(ws) -> tuple[dict, int]:
    messages = []
    try:
        async for m in ws:
            messages.append(json.loads(m))
    except ConnectionClosed:
        pass
    errors = [m for m in messages if m["type"] == "error"]
    assert len(errors) == 1 and messages[-1] is errors[0], messages
    return errors[0], ws.close_code


def assert_healthy(server) -> None:
    assert server.get("/health")[0] == 200
    assert server.get("/ready")[0] == 200


@pytest.mark.parametrize(
    "query,field",
    [({"call_id": None}, "call_id"), ({"sample_rate": 96000}, "sample_rate"),
     ({"sample_rate": None}, "sample_rate is required"), ({"channels": 9}, "channels"),
     ({"vad_silence_ms": -1}, "vad_silence_ms"), ({"codec": "speex"}, "codec"),
     ({"partial_ms": "soon"}, "partial_ms")],
)
async def test_bad_parameters_are_refused_at_the_handshake(server, query, field):
    status, body = await refused(server.ws_url(**query))
    assert status == 400
    assert body["error"]["code"] == "bad_request" and field in body["error"]["message"]
    assert server.metrics()['stt_rejections_total{reason="bad_request"}'] == 1
    assert_healthy(server)


async def test_capacity_is_refused_with_503_and_freed_slots_are_reused(start_server):
    server = start_server(max_sessions=2)
    async with connect(server.ws_url()) as a, connect(server.ws_url()) as b:
        await a.recv(), await b.recv()
        status, body = await refused(server.ws_url())
        assert status == 503 and body["error"]["code"] == "capacity"
        assert server.get("/ready")[0] == 503
        assert server.get("/health")[0] == 200
    server.wait_for(lambda: len(server.ctx.slots) == 0)
    t = await stream(server.ws_url(), FIXTURES["ls_6930_75918_0000"].pcm())
    assert t.close_code == 1000
    assert server.metrics()['stt_rejections_total{reason="capacity"}'] == 1


@pytest.mark.parametrize(
    "payload,code,close",
    [
        (b"\x00" * 4002, "frame_too_large", 1009),
        (b"\x01\x02\x03\x04\x05", "invalid_audio", 1008),
        ("{not json", "bad_request", 1008),
        ('{"type":"shout"}', "bad_request", 1008),
        ('["commit"]', "bad_request", 1008),
        ("x" * 10000, "bad_request", 1008),
    ],
)
async def test_bad_frames_get_an_error_then_a_close(start_server, payload, code, close):
    server = start_server(max_frame_bytes=4000)
    async with connect(server.ws_url(), max_size=None) as ws:
        await ws.recv()
        await ws.send(np.zeros(1600, dtype=np.int16).tobytes())
        await ws.send(payload)
        error, close_code = await error_and_close(ws)
    assert error["code"] == code and error["message"]
    assert close_code == close
    server.wait_for(lambda: server.metrics().get(f'stt_errors_total{{code="{code}"}}') == 1)
    assert_healthy(server)
    assert (await stream(server.ws_url(), FIXTURES["ls_6930_75918_0000"].pcm())).close_code == 1000


async def test_zero_length_frames_are_keepalives(server):
    clip = FIXTURES["ls_6930_75918_0000"]
    async with connect(server.ws_url()) as ws:
        await ws.recv()
        pcm = clip.pcm().tobytes()
        for i in range(0, len(pcm), 3200):
            await ws.send(b"")
            await ws.send(pcm[i : i + 3200])
        await ws.send('{"type":"eos"}')
        finals = [json.loads(m) for m in [m async for m in ws] if '"final"' in m]
    assert ws.close_code == 1000 and finals[-1]["text"] == clip.text


async def test_idle_sessions_are_closed(start_server):
    server = start_server(idle_timeout_sec=0.4)
    async with connect(server.ws_url()) as ws:
        await ws.recv()
        error, close_code = await asyncio.wait_for(error_and_close(ws), 5)
    assert error["code"] == "idle_timeout" and close_code == 1008


async def test_session_audio_limit_flushes_then_closes(start_server):
    server = start_server(max_session_seconds=2.0)
    clip = FIXTURES["lj_LJ001-0001"]
    t = await stream(server.ws_url(), clip.pcm(), frame_ms=100, end=None)
    assert t.of("final"), "audio received before the limit is still transcribed"
    assert t.messages[-1]["type"] == "error"
    assert t.messages[-1]["code"] == "session_too_long"
    assert t.close_code == 1008


async def test_overload_drops_oldest_audio_tells_the_client_then_gives_up(start_server):
    """A real-time client (not ahead of the clock) that the server cannot keep up with."""
    server = start_server(mock_delay_ms=300, in_queue_ms=100, in_queue_max_drop_ms=600,
                          inference_threads=1)
    clip = FIXTURES["lj_LJ001-0001"]
    t = await stream(server.ws_url(), clip.pcm(), frame_ms=20, realtime=1.0, end=None)
    warnings = t.of("warning")
    assert warnings and all(w["code"] == "audio_dropped" for w in warnings)
    assert [w["total_dropped_ms"] for w in warnings] == sorted(w["total_dropped_ms"]
                                                               for w in warnings)
    assert sum(w["dropped_ms"] for w in warnings) == warnings[-1]["total_dropped_ms"]
    assert t.messages[-1]["code"] == "audio_queue_overflow" and t.close_code == 1013
    server.wait_for(lambda: len(server.ctx.slots) == 0 and server.ctx.backend.open_streams == 0)

    def reconciled() -> bool:
        m = server.metrics()
        dropped = sum(v for k, v in m.items() if k.startswith("stt_audio_dropped_seconds_total{"))
        return m['stt_audio_dropped_seconds_total{reason="queue_full"}'] >= 0.6 and abs(
            m["stt_audio_processed_seconds_total"] + dropped - m["stt_audio_received_seconds_total"]
        ) < 1e-6

    server.wait_for(reconciled, timeout=15)
    assert_healthy(server)


async def test_queue_depth_metric_sees_audio_waiting_for_a_busy_backend(start_server):
    server = start_server(mock_delay_ms=1500, inference_threads=1)
    clip = FIXTURES["lj_LJ001-0001"].pcm().tobytes()
    async with connect(server.ws_url()) as ws:
        await ws.recv()
        for i in range(0, 64000, 3200):  # 2 s of speech: the first partial blocks the thread
            await ws.send(clip[i : i + 3200])
        await asyncio.sleep(1.0)
        for i in range(64000, 96000, 3200):
            await ws.send(clip[i : i + 3200])
        server.wait_for(lambda: server.metrics()['stt_queue_depth{queue="input"}'] >= 1)
