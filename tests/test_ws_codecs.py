"""/v1/stt/ws with every codec: raw PCM at any rate and channel count, G.711, and containers
decoded as their bytes arrive (mock backend, tolerant of lossy audio)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.backends.conformance import FIXTURES
from tests.client import stream
from tests.media import encode, float_wav, g711

CLIP = FIXTURES["lj_LJ001-0001"]


def words(text: str) -> list[str]:
    return "".join(c for c in text.lower() if c.isalnum() or c.isspace()).split()


@pytest.fixture(scope="module")
def tolerant_server():
    from tests.server import RunningServer

    server = RunningServer(mock_tolerant=True)
    server.start()
    yield server
    server.stop()


def resample(pcm: np.ndarray, rate: int) -> np.ndarray:
    import soxr

    return soxr.resample(pcm.astype(np.float32) / 32768, 16000, rate)


@pytest.mark.parametrize(
    "codec,rate,channels",
    [("pcm_s16le", 8000, 1), ("pcm_s16le", 44100, 2), ("pcm_f32le", 48000, 1),
     ("pcm_f32le", 16000, 2), ("mulaw", 8000, 1), ("alaw", 8000, 1), ("mulaw", 16000, 1)],
)
async def test_raw_codecs_at_any_rate(tolerant_server, codec, rate, channels):
    pcm = CLIP.pcm()
    if codec in ("mulaw", "alaw"):
        data = g711(pcm, codec, rate)
    else:
        x = resample(pcm, rate)
        x = np.repeat(x, channels)  # interleaved copies of the mono signal
        data = (np.clip(x * 32768, -32768, 32767).astype("<i2").tobytes()
                if codec == "pcm_s16le" else x.astype("<f4").tobytes())
    bytes_per_100ms = len(data) * 100 * 16000 // (pcm.size * 1000)
    frame = bytes_per_100ms - bytes_per_100ms % ({"pcm_s16le": 2, "pcm_f32le": 4}.get(codec, 1)
                                                 * channels)
    url = tolerant_server.ws_url(codec=codec, sample_rate=rate, channels=channels)
    result = await stream(url, data, frame_ms=frame // 32, tail_silence_ms=0)
    assert result.of("ready")[0]["sample_rate"] == 16000
    assert words(result.text) == words(CLIP.text), result.messages[-3:]
    assert result.close_code == 1000


@pytest.mark.parametrize("fmt,codec", [("ogg_opus_48k_stereo", "ogg"),
                                       ("webm_opus_48k", "webm"), ("mp3_44k", "mp3"),
                                       ("flac_48k", "flac"), ("ogg_opus_48k_stereo", "auto"),
                                       ("wav_s24_48k", "auto")])
async def test_container_streams_decode_as_they_arrive(tolerant_server, fmt, codec):
    data = encode(CLIP.pcm(), fmt)
    url = tolerant_server.ws_url(codec=codec, sample_rate=None)
    result = await stream(url, data, frame_ms=125)  # 4000-byte messages
    assert words(result.text) == words(CLIP.text), result.messages[-3:]
    # partials while streaming: the decoder hands audio over page by page, not at the end
    assert result.of("partial")


async def test_raw_frame_of_partial_samples_is_refused(tolerant_server):
    url = tolerant_server.ws_url(codec="pcm_f32le", sample_rate=16000)
    result = await stream(url, b"\0" * 6, frame_ms=1)
    (error,) = result.of("error")
    assert error["code"] == "invalid_audio" and result.close_code == 1008


async def test_garbage_container_stream_is_an_error_not_a_hang(tolerant_server):
    url = tolerant_server.ws_url(codec="ogg", sample_rate=None)
    result = await stream(url, b"not an ogg stream at all " * 400, frame_ms=125, wait_s=20)
    (error,) = result.of("error")
    assert error["code"] in ("unsupported_audio", "invalid_audio")
    assert result.close_code == 1008
    assert tolerant_server.get("/ready")[0] == 200


async def test_float_wav_stream_with_nan_is_refused_like_raw_f32(tolerant_server):
    x = CLIP.pcm().astype(np.float32) / 32768
    x[16000::7] = np.nan  # clean for the first second
    url = tolerant_server.ws_url(codec="wav", sample_rate=None)
    result = await stream(url, float_wav(x), frame_ms=125)
    (error,) = result.of("error")
    assert error["code"] == "invalid_audio" and "NaN" in error["message"]
    assert result.close_code == 1008


async def test_mp3_stream_behind_a_lying_id3_tag_is_refused(tolerant_server):
    lying = b"ID3\x04\x00\x00\x7f\x7f\x7f\x7f" + encode(CLIP.pcm(), "mp3_44k")
    url = tolerant_server.ws_url(codec="mp3", sample_rate=None)
    result = await stream(url, lying, frame_ms=125)
    (error,) = result.of("error")
    assert error["code"] == "invalid_audio" and "ID3v2" in error["message"]
    assert result.close_code == 1008
