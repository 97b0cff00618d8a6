"""Hostile input catalogue: each case gets a clear error (a status, or an error message with a
code and a close code) and leaves the server healthy and serving.

More cases live beside the features they attack: handshake parameters and bad frames in
test_limits.py, uploads in test_batch.py, codecs in test_ws_codecs.py, auth in
test_security.py.
"""

from __future__ import annotations

import io
import json
import wave

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.backends.conformance import FIXTURES
from tests.client import stream

CLIP = FIXTURES["ls_6930_75918_0000"]


async def still_serves(server) -> None:
    assert server.get("/health")[0] == 200 and server.get("/ready")[0] == 200
    result = await stream(server.ws_url(), CLIP.pcm())
    assert result.text == CLIP.text and result.close_code == 1000


async def send_then_collect(url: str, *frames, text: bool | None = None) -> tuple[list, int]:
    messages = []
    async with connect(url, max_size=None) as ws:
        messages.append(json.loads(await ws.recv()))
        for frame in frames:
            await ws.send(frame, text=text)
        try:
            async for raw in ws:
                messages.append(json.loads(raw))
        except ConnectionClosed:
            pass
        return messages, ws.close_code


@pytest.mark.parametrize(
    "frame,code",
    [
        ("[" * 3000 + "]" * 3000, "bad_request"),  # nested past the parser's recursion limit
        ('{"type": 5}', "bad_request"),
        ("null", "bad_request"),
        ('{"type":"commit"', "bad_request"),  # truncated JSON
        ('{"type":"' + "x" * 5000 + '"}', "bad_request"),
        ("hello", "bad_request"),  # text where audio is expected
        ('{"type":"EOS\\u0000"}', "bad_request"),
        (b"\x00", "invalid_audio"),  # one byte: not a whole sample
    ],
    ids=["deep-json", "type-not-string", "null", "truncated", "huge-type", "plain-text",
         "nul-in-type", "one-byte"],
)
async def test_hostile_frames(server, frame, code):
    messages, close = await send_then_collect(server.ws_url(), frame)
    assert messages[-1]["type"] == "error" and messages[-1]["code"] == code, messages
    assert close == 1008
    await still_serves(server)


async def test_invalid_utf8_text_frame_is_closed_1007(server):
    messages, close = await send_then_collect(server.ws_url(), b"\xff\xfe{}", text=True)
    assert close == 1007  # the WebSocket layer refuses it before sttd sees it
    await still_serves(server)


async def test_control_flood_is_harmless(server):
    frames = ['{"type":"ping"}'] * 300 + ['{"type":"commit"}'] * 300 + ['{"type":"eos"}']
    messages, close = await send_then_collect(server.ws_url(), *frames)
    assert close == 1000 and len([m for m in messages if m["type"] == "pong"]) == 300
    await still_serves(server)


async def test_audio_after_eos_is_not_read(server):
    pcm = CLIP.pcm().tobytes()
    frames = [pcm[i : i + 3200] for i in range(0, len(pcm), 3200)]
    messages, close = await send_then_collect(
        server.ws_url(), *frames, '{"type":"eos"}', b"\x00" * 3200)
    assert close == 1000 and [m["text"] for m in messages if m["type"] == "final"] == [CLIP.text]


@pytest.mark.parametrize(
    "query",
    [{"sample_rate": 0}, {"sample_rate": -16000}, {"sample_rate": 10**12},
     {"sample_rate": "16000.5"}, {"partial_ms": 10**9}, {"vad_silence_ms": -5},
     {"max_segment_ms": 10**12}, {"hotwords": ",".join(f"w{i}" for i in range(800))},
     {"language": "en" * 500}, {"channels": 100}, {"codec": "PCM_S16LE"}, {"n_best": 0},
     {"n_best": 1000}, {"vad": "neural"}, {"vad_threshold": 10**6}],
    ids=lambda q: next(iter(q)) + "=" + str(next(iter(q.values())))[:12],
)
async def test_absurd_query_values_get_400(server, query):
    with pytest.raises(InvalidStatus) as err:
        async with connect(server.ws_url(**query)):
            pass
    assert err.value.response.status_code == 400
    body = json.loads(err.value.response.body)
    assert body["error"]["code"] == "bad_request" and next(iter(query)) in body["error"]["message"]
    assert server.get("/ready")[0] == 200


def lying_wav(claimed_seconds: int, real_samples: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(np.zeros(real_samples, dtype="<i2").tobytes())
    data = bytearray(buf.getvalue())
    size = min(claimed_seconds * 32000, 0xFFFFFFF0)
    data[4:8] = (size + 36).to_bytes(4, "little")  # RIFF size
    data[40:44] = size.to_bytes(4, "little")  # data chunk size: "hours of audio"
    return bytes(data)


async def test_wav_header_claiming_hours_decodes_what_is_there(server):
    async with httpx.AsyncClient(base_url=server.http, timeout=30) as client:
        r = await client.post("/v1/stt/transcribe", content=lying_wav(10 * 3600, 16000),
                              headers={"Content-Type": "audio/wav"})
    assert r.status_code == 200 and r.json()["duration_ms"] == 1000  # counted, not believed
    await still_serves(server)


@pytest.mark.parametrize(
    "headers,body,status",
    [
        ({"Content-Type": "multipart/form-data"}, b"--x\r\n", 400),  # no boundary
        ({"Content-Type": "multipart/form-data; boundary=zz"}, b"garbage without parts", 400),
        ({"Content-Type": "multipart/form-data; boundary=zz"},
         b'--zz\r\nContent-Disposition: form-data; name="language"\r\n\r\n' + b"e" * 9000
         + b"\r\n--zz--\r\n", 400),  # a form field far too long
        ({"Content-Type": "application/json"}, b'{"audio": "AAAA"}', 415),
        ({}, b"RIFF....", 415),  # no Content-Type at all
    ],
    ids=["no-boundary", "no-parts", "huge-field", "json", "no-content-type"],
)
async def test_hostile_uploads(server, headers, body, status):
    async with httpx.AsyncClient(base_url=server.http, timeout=30) as client:
        r = await client.post("/v1/stt/transcribe", content=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"]
    await still_serves(server)
