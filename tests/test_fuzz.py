"""Property tests (hypothesis, bounded example counts for CI): the protocol parsers and the
audio decoders either succeed or raise ProtocolError with a code — nothing else, for any input."""

from __future__ import annotations

import asyncio

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.audio import RAW_CODECS, RawDecoder
from protocol.batch import parse_params as parse_batch_params
from protocol.common import Command, ProtocolError
from protocol.container import ContainerDecoder
from protocol.native import parse_params, parse_text
from session.events import ErrorCode

FAST = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
PARAM_KEYS = ["call_id", "sample_rate", "codec", "channels", "frame_ms", "partial_ms",
              "language", "hotwords", "n_best", "vad", "vad_threshold", "vad_silence_ms",
              "max_segment_ms", "response_format", "token"]
json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)


@FAST
@given(st.text(max_size=5000) | json_like.map(lambda v: __import__("json").dumps(v)))
def test_parse_text_returns_a_command_or_a_bad_request(text):
    try:
        assert isinstance(parse_text(text), Command)
    except ProtocolError as exc:
        assert exc.code is ErrorCode.BAD_REQUEST and exc.message


@FAST
@given(st.dictionaries(st.sampled_from(PARAM_KEYS), st.text(max_size=300), max_size=10))
def test_handshake_and_form_params_validate_or_refuse(query):
    for parse in (parse_params, parse_batch_params):
        try:
            parse(query)
        except ProtocolError as exc:
            assert exc.code is ErrorCode.BAD_REQUEST and exc.message


@FAST
@given(codec=st.sampled_from(RAW_CODECS), rate=st.sampled_from([8000, 16000, 22050, 48000]),
       channels=st.integers(1, 3), frames=st.lists(st.binary(max_size=2000), max_size=6))
def test_raw_decoders_emit_whole_16k_samples_or_refuse(codec, rate, channels, frames):
    decoder = RawDecoder(codec, rate, channels)
    for frame in frames:
        try:
            out = decoder.decode(frame)
        except ProtocolError as exc:
            assert exc.code is ErrorCode.INVALID_AUDIO
            continue
        assert len(out) % 2 == 0
        assert np.frombuffer(out, "<i2").size <= len(frame) * 16000 // rate + 64
    assert len(decoder.flush()) % 2 == 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(head=st.sampled_from([b"", b"OggS", b"RIFF\x24\x00\x00\x00WAVEfmt ", b"fLaC",
                             b"ID3\x04\x00", b"\x1aE\xdf\xa3"]),
       chunks=st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=5),
       fmt=st.sampled_from(["auto", "ogg", "webm", "mp3", "flac", "wav"]))
def test_container_decoder_on_garbage_ends_cleanly(head, chunks, fmt):
    async def run() -> None:
        decoder = ContainerDecoder(fmt, max_seconds=60)
        try:
            data = [head + chunks[0], *chunks[1:]]
            for chunk in data:
                async for pcm in decoder.feed(chunk):
                    assert len(pcm) % 2 == 0
            async for pcm in decoder.finish():
                assert len(pcm) % 2 == 0
        except ProtocolError as exc:
            assert exc.code in (ErrorCode.INVALID_AUDIO, ErrorCode.UNSUPPORTED_AUDIO,
                                ErrorCode.AUDIO_TOO_LONG)
        finally:
            decoder.close()

    asyncio.run(asyncio.wait_for(run(), 20))


def test_schemathesis_finds_no_server_error_in_the_http_api(start_server):
    """Schemathesis generates requests from the OpenAPI schema (bounded for CI) against a
    real server: no input may produce a 5xx."""
    import subprocess
    import sys
    from pathlib import Path

    server = start_server()
    cli = Path(sys.executable).parent / "schemathesis"
    out = subprocess.run(
        [str(cli), "run", f"{server.http}/openapi.json", "--checks", "not_a_server_error",
         "--max-examples", "30", "--seed", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "passed" in out.stdout
