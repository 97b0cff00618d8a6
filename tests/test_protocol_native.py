import json

import pytest

from backends.base import Alternative, Word
from protocol.common import CLOSE_CODES, Command, ProtocolError
from protocol.native import NativeEncoder, parse_params, parse_text
from session.events import (
    AudioDropped,
    ErrorCode,
    Final,
    FinalReason,
    Partial,
    Pong,
    Ready,
    SessionEnd,
    SessionError,
    SpeechStarted,
)


def test_params_defaults_and_unknown_ignored():
    p = parse_params({"call_id": "c1", "sample_rate": "16000", "model": "nova-3", "x": "y"})
    assert (p.codec, p.channels, p.frame_ms, p.language, p.hotwords) == (
        "pcm_s16le", 1, 20, "auto", ()
    )
    assert p.partial_ms is None and p.vad_silence_ms is None


def test_params_overrides_and_hotwords():
    p = parse_params({
        "call_id": "c", "sample_rate": "16000", "language": "pt_BR", "partial_ms": "250",
        "hotwords": "sttd, Kaldi ,,whisper", "vad_threshold": "0", "vad_silence_ms": "800",
        "max_segment_ms": "15000",
    })
    assert p.language == "pt-br"
    assert p.hotwords == ("sttd", "Kaldi", "whisper")
    assert (p.partial_ms, p.vad_threshold, p.vad_silence_ms, p.max_segment_ms) == (
        250, 0, 800, 15000
    )


@pytest.mark.parametrize(
    "query,fragment",
    [
        ({"sample_rate": "16000"}, "call_id is required"),
        ({"call_id": "c"}, "sample_rate is required"),
        ({"call_id": "c", "sample_rate": "7999"}, "sample_rate: Input should be greater"),
        ({"call_id": "c", "sample_rate": "96000"}, "sample_rate: Input should be less"),
        ({"call_id": "c", "sample_rate": "abc"}, "sample_rate"),
        ({"call_id": "c", "sample_rate": "16000", "codec": "opus"}, "codec"),
        ({"call_id": "c", "sample_rate": "16000", "channels": "0"}, "channels"),
        ({"call_id": "c", "codec": "mulaw"}, "sample_rate is required for codec mulaw"),
        ({"call_id": "c", "sample_rate": "16000", "partial_ms": "-5"}, "partial_ms"),
        ({"call_id": "c", "sample_rate": "16000", "vad_silence_ms": "99999999"}, "vad_silence_ms"),
        ({"call_id": "c", "sample_rate": "16000", "vad_threshold": "40000"}, "vad_threshold"),
        ({"call_id": "c", "sample_rate": "16000", "language": "en;drop"}, "language"),
        ({"call_id": "c", "sample_rate": "16000", "hotwords": ",".join(["w"] * 101)}, "hotwords"),
        ({"call_id": "x" * 129, "sample_rate": "16000"}, "call_id"),
    ],
)
def test_params_rejected_with_a_message_naming_the_field(query, fragment):
    """Every rejection names the field and why."""
    with pytest.raises(ProtocolError) as err:
        parse_params(query)
    assert err.value.code is ErrorCode.BAD_REQUEST
    assert fragment in err.value.message


@pytest.mark.parametrize(
    "text,command",
    [("EOS", Command.EOS), ('{"type":"eos"}', Command.EOS), ('{"type":"commit"}', Command.COMMIT),
     ('{"type":"ping","event_id":"e1"}', Command.PING)],
)
def test_parse_text_commands(text, command):
    assert parse_text(text) is command


@pytest.mark.parametrize(
    "text,fragment",
    [("{", "not valid JSON"), ("[]", '"type"'), ('{"type": 5}', '"type"'), ("null", '"type"'),
     ('{"type":"dance"}', "unknown message type 'dance'"), ("x" * 5000, "too large"),
     ("eos", "not valid JSON")],
)
def test_parse_text_rejects(text, fragment):
    with pytest.raises(ProtocolError) as err:
        parse_text(text)
    assert fragment in err.value.message


def decode(enc, event):
    return json.loads(enc.encode(event))


def test_encoder_messages_and_seq():
    enc = NativeEncoder("call-9")
    ready = decode(enc, Ready("sid", 16000, "mock", "m1"))
    assert ready["type"] == "ready" and ready["seq"] == 1 and ready["call_id"] == "call-9"
    assert ready["session_id"] == "sid" and ready["backend"] == "mock" and ready["model"] == "m1"
    started = decode(enc, SpeechStarted(1, 300))
    assert started == {**started, "type": "speech_started", "seq": 2, "segment_seq": 1,
                       "start_ms": 300}
    partial = decode(enc, Partial(1, "hello", 300, 900))
    assert partial["final"] is False and partial["text"] == "hello" and partial["seq"] == 3
    final = decode(enc, Final(
        1, "hello world", 300, 1400, FinalReason.ENDPOINT,
        words=(Word("hello", 300, 700, 0.9), Word("world", 700, 1400, 0.8)), confidence=0.85,
        language="en", alternatives=(Alternative("hello word", -3.2),), first_token_ms=120,
        latency_ms=40, segment_duration_ms=1100,
    ))
    assert final["seq"] == 4 and final["final"] is True and final["reason"] == "endpoint"
    assert final["words"][1] == {"word": "world", "start_ms": 700, "end_ms": 1400,
                                 "confidence": 0.8}
    assert final["alternatives"] == [{"text": "hello word", "score": -3.2}]
    for key in ("confidence", "first_token_ms", "latency_ms", "segment_duration_ms", "language"):
        assert key in final
    warn = decode(enc, AudioDropped(200, 600))
    assert (warn["type"], warn["code"], warn["dropped_ms"], warn["total_dropped_ms"]) == (
        "warning", "audio_dropped", 200, 600
    )
    assert decode(enc, Pong())["type"] == "pong"
    err = decode(enc, SessionError(ErrorCode.FRAME_TOO_LARGE, "too big"))
    assert (err["type"], err["code"], err["message"], err["seq"]) == (
        "error", "frame_too_large", "too big", 7
    )
    assert enc.encode(SessionEnd()) is None


def test_every_error_code_has_a_close_code():
    assert set(CLOSE_CODES) == set(ErrorCode)
    assert CLOSE_CODES[ErrorCode.FRAME_TOO_LARGE] == 1009
    assert CLOSE_CODES[ErrorCode.BACKEND_ERROR] == 1011
    assert CLOSE_CODES[ErrorCode.AUDIO_QUEUE_OVERFLOW] == 1013
    assert CLOSE_CODES[ErrorCode.BAD_REQUEST] == 1008


def test_container_codecs_need_no_sample_rate_and_raw_codecs_take_any_rate():
    assert parse_params({"call_id": "c", "codec": "ogg"}).sample_rate is None
    p = parse_params({"call_id": "c", "codec": "mulaw", "sample_rate": "8000", "channels": "2"})
    assert (p.is_raw, p.sample_rate, p.channels) == (True, 8000, 2)
