"""POST /v1/stt/transcribe against a real uvicorn with the mock backend: every accepted format,
multipart and raw bodies, chunked uploads, response formats, and every error path."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest

from tests.backends.conformance import FIXTURES
from tests.media import FORMATS, encode, encode_as, float_wav, wav_bytes

CLIP = FIXTURES["lj_LJ001-0001"]
TURNS = FIXTURES["ep_ls_three_turns_pause4"]


@pytest.fixture(scope="module")
def tolerant_server():
    from tests.server import RunningServer

    server = RunningServer(mock_tolerant=True, max_upload_bytes=4 * 1024 * 1024,
                           max_audio_seconds=120)
    server.start()
    yield server
    server.stop()


def words(text: str) -> list[str]:
    return "".join(c for c in text.lower() if c.isalnum() or c.isspace()).split()


async def post(server, **kwargs) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.http, timeout=60) as client:
        return await client.post("/v1/stt/transcribe", **kwargs)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
async def test_every_format_transcribes_to_the_reference(tolerant_server, fmt):
    data = encode(CLIP.pcm(), fmt)
    r = await post(tolerant_server, files={"file": (f"clip.{fmt}", data)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert words(body["text"]) == words(CLIP.text)
    assert abs(body["duration_ms"] - CLIP.pcm().size / 16) < 150


async def test_raw_body_json_has_segments_words_and_timings(server):
    r = await post(server, content=wav_bytes(TURNS.pcm()),
                   headers={"Content-Type": "audio/wav"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {"text", "duration_ms", "latency_ms", "language", "segments"}
    assert len(body["segments"]) >= 3  # three turns (the energy VAD splits one at a pause)
    assert words(body["text"]) == words(TURNS.text)
    starts = [s["start_ms"] for s in body["segments"]]
    assert starts == sorted(starts)
    for seg in body["segments"]:
        assert seg["words"]
        assert all(seg["start_ms"] <= w["start_ms"] <= seg["end_ms"] for w in seg["words"])
    assert body["duration_ms"] == TURNS.pcm().size // 16


@pytest.mark.parametrize("fmt", ["text", "srt", "vtt"])
async def test_text_srt_and_vtt(server, fmt):
    r = await post(server, content=wav_bytes(TURNS.pcm()), params={"response_format": fmt},
                   headers={"Content-Type": "audio/x-wav"})
    assert r.status_code == 200, r.text
    out = r.text
    if fmt == "text":
        assert r.headers["content-type"].startswith("text/plain")
        assert words(out) == words(TURNS.text)
    elif fmt == "srt":
        blocks = out.strip().split("\n\n")
        assert len(blocks) >= 3 and blocks[0].startswith("1\n00:00:")
        assert " --> " in blocks[0] and "," in blocks[0].split("\n")[1]
    else:
        assert out.startswith("WEBVTT\n\n") and out.count(" --> ") >= 3


async def test_form_fields_before_the_file_apply(server):
    r = await post(server, data={"response_format": "text", "language": "en"},
                   files={"file": ("a.wav", wav_bytes(CLIP.pcm()))})
    assert r.status_code == 200 and words(r.text) == words(CLIP.text)


async def test_chunked_upload_is_recognised_while_it_arrives(server):
    """The first segment is recognised before the last byte of the upload is sent."""
    data = wav_bytes(TURNS.pcm())
    half = len(data) // 2
    recognised_early = asyncio.Event()

    async def body():
        for i in range(0, half, 8192):
            yield data[i : i + 8192]
        for _ in range(200):  # wait (≤ 10 s) until the server has finished a segment
            if server.metrics().get('stt_segments_total{reason="endpoint"}', 0) >= 1:
                recognised_early.set()
                break
            await asyncio.sleep(0.05)
        for i in range(half, len(data), 8192):
            yield data[i : i + 8192]

    r = await post(server, content=body(), headers={"Content-Type": "audio/wav"})
    assert r.status_code == 200, r.text
    assert recognised_early.is_set(), "no segment was recognised before the upload ended"
    assert words(r.json()["text"]) == words(TURNS.text)


async def test_openapi_describes_the_endpoint(server):
    status, text = server.get("/openapi.json")
    op = json.loads(text)["paths"]["/v1/stt/transcribe"]["post"]
    assert {"multipart/form-data", "audio/*"} <= set(op["requestBody"]["content"])
    assert {p["name"] for p in op["parameters"]} >= {"language", "hotwords", "response_format"}
    assert server.get("/docs")[0] == 200


# -- errors: a clear status and code, and the server keeps serving -------------------------


async def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


async def test_upload_over_the_byte_limit_is_413_before_and_while_reading(tolerant_server):
    big = b"\0" * (5 * 1024 * 1024)
    await assert_error(await post(tolerant_server, content=big,
                                  headers={"Content-Type": "audio/wav"}),
                       413, "upload_too_large")

    async def chunked():  # no Content-Length: the limit is counted as bytes arrive
        data = wav_bytes(np.zeros(48000 * 60, dtype=np.int16), rate=48000)  # 5.8 MB, 60 s
        for i in range(0, len(data), 65536):
            yield data[i : i + 65536]

    await assert_error(await post(tolerant_server, content=chunked(),
                                  headers={"Content-Type": "audio/wav"}),
                       413, "upload_too_large")
    assert tolerant_server.get("/ready")[0] == 200


async def test_audio_longer_than_the_limit_is_413(tolerant_server):
    # 3 minutes of FLAC silence: a few KB on the wire, over the 120 s limit once decoded
    silence = np.zeros(16000 * 180, dtype=np.int16)
    data = encode(silence, "flac_48k")
    assert len(data) < 400_000
    await assert_error(await post(tolerant_server, files={"file": ("s.flac", data)}),
                       413, "audio_too_long")


@pytest.mark.parametrize(
    "kwargs,status,code",
    [
        ({"content": b"hello", "headers": {"Content-Type": "text/plain"}}, 415,
         "unsupported_audio"),
        ({"content": b"this is not audio at all" * 100,
          "headers": {"Content-Type": "audio/ogg"}}, 415, "unsupported_audio"),
        ({"content": b"", "headers": {"Content-Type": "audio/wav"}}, 415, "unsupported_audio"),
        ({"data": {"language": "en"}}, 400, "bad_request"),
        ({"content": b"RIFF", "params": {"response_format": "docx"},
          "headers": {"Content-Type": "audio/wav"}}, 400, "bad_request"),
        ({"content": b"RIFF", "params": {"language": "en;rm"},
          "headers": {"Content-Type": "audio/wav"}}, 400, "bad_request"),
    ],
    ids=["text-plain", "garbage-ogg", "empty", "no-file", "bad-format", "bad-language"],
)
async def test_bad_requests(server, kwargs, status, code):
    if "data" in kwargs:  # a form with fields but no file
        kwargs = {**kwargs, "files": {"other": (None, "x")}}
    await assert_error(await post(server, **kwargs), status, code)
    assert server.get("/ready")[0] == 200


async def test_truncated_and_corrupt_files_are_400_not_500(tolerant_server):
    data = encode(CLIP.pcm(), "ogg_opus_48k_stereo")
    corrupt = data[:200] + bytes(np.random.default_rng(1).integers(0, 256, len(data) - 200,
                                                                   dtype=np.uint8))
    r = await post(tolerant_server, files={"file": ("c.ogg", corrupt)})
    assert r.status_code in (200, 400, 415), r.text  # garbage is skipped or refused
    r = await post(tolerant_server, files={"file": ("t.mp3", encode(CLIP.pcm(), "mp3_44k")[:5000])})
    assert r.status_code == 200  # a cut file decodes as far as it goes
    assert tolerant_server.get("/ready")[0] == 200


async def test_a_huge_claimed_sample_rate_is_refused(server):
    header = bytearray(wav_bytes(np.zeros(1600, dtype=np.int16)))
    header[24:28] = (2_000_000_000).to_bytes(4, "little")  # sample rate field of the fmt chunk
    r = await post(server, content=bytes(header), headers={"Content-Type": "audio/wav"})
    assert r.status_code in (400, 415), r.text
    assert server.get("/ready")[0] == 200


async def test_full_server_answers_503(start_server):
    server = start_server(max_sessions=1)
    from websockets.asyncio.client import connect

    async with connect(server.ws_url()) as ws:
        await ws.recv()
        await assert_error(await post(server, content=wav_bytes(CLIP.pcm()),
                                      headers={"Content-Type": "audio/wav"}), 503, "capacity")
    r = await post(server, content=wav_bytes(CLIP.pcm()), headers={"Content-Type": "audio/wav"})
    assert r.status_code == 200
    m = server.metrics()
    assert m['stt_batch_requests_total{status="503"}'] == 1
    assert m['stt_batch_requests_total{status="200"}'] == 1


async def test_a_stalled_upload_gets_408_and_frees_its_slot(start_server):
    server = start_server(upload_idle_timeout_sec=0.5, max_sessions=1)
    data = wav_bytes(CLIP.pcm())

    async def slowloris():
        yield data[:4096]
        await asyncio.sleep(3)  # goes quiet mid-upload
        yield data[4096:]

    r = await post(server, content=slowloris(), headers={"Content-Type": "audio/wav"})
    assert r.status_code == 408 and r.json()["error"]["code"] == "upload_timeout"
    r = await post(server, content=data, headers={"Content-Type": "audio/wav"})
    assert r.status_code == 200  # the slot came back


@pytest.mark.parametrize("bad", ["nan", "inf"])
async def test_float_wav_with_nan_or_inf_is_invalid_audio(server, bad):
    """As raw pcm_f32le frames are: NaN used to reach the backend as -32768."""
    x = CLIP.pcm().astype(np.float32) / 32768
    if bad == "nan":
        x[::7] = np.nan
    else:
        x[16000 : 16000 * 4] = np.inf
    r = await post(server, content=float_wav(x), headers={"Content-Type": "audio/wav"})
    await assert_error(r, 400, "invalid_audio")
    assert "NaN or infinite" in r.json()["error"]["message"]
    finite = await post(server, files={"file": ("f.wav", float_wav(np.nan_to_num(x, posinf=0)))})
    assert finite.status_code == 200


async def test_an_id3_tag_claiming_more_than_the_file_is_invalid_audio(tolerant_server):
    """FFmpeg skips what a leading ID3v2 tag claims; claiming 256 MB swallowed the MP3 after
    it (200 with a cut transcript). Now refused."""
    lying = b"ID3\x04\x00\x00\x7f\x7f\x7f\x7f" + encode(CLIP.pcm(), "mp3_44k")
    r = await post(tolerant_server, content=lying, headers={"Content-Type": "audio/mpeg"})
    await assert_error(r, 400, "invalid_audio")
    assert "ID3v2" in r.json()["error"]["message"]


async def test_a_chained_ogg_that_changes_rate_is_refused_with_where(tolerant_server):
    first = encode(CLIP.pcm(), "ogg_vorbis_44k_stereo")
    second = encode_as(CLIP.pcm(), "ogg", "vorbis", 22050, 2, {"strict": "experimental"})
    r = await post(tolerant_server, files={"file": ("chain.ogg", first + second)})
    await assert_error(r, 400, "invalid_audio")
    message = r.json()["error"]["message"]
    assert "after 9." in message and "chained Ogg" in message, message
    r = await post(tolerant_server, files={"file": ("chain.ogg", first + first)})
    assert r.status_code == 200  # the same parameters chain fine: all of it is decoded
    assert abs(r.json()["duration_ms"] - 2 * CLIP.pcm().size / 16) < 300
