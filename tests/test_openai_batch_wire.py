"""protocol/openai_batch.py: every body validated strictly against the openai SDK's own types,
SRT/WebVTT byte for byte, the SSE concatenation invariant, and form refusals naming the field."""

from __future__ import annotations

import json
import math

import pytest

from backends.base import Word
from protocol.common import ProtocolError
from protocol.openai_batch import (
    ParamError,
    delta_event,
    done_event,
    error_body,
    error_for,
    model_list,
    parse_form,
    render,
    sse_event,
    status_for,
    token_usage,
    transcript,
)
from session.events import ErrorCode, Final, FinalReason

openai = pytest.importorskip("openai")
from openai.types import Model  # noqa: E402
from openai.types.audio import (  # noqa: E402
    Transcription,
    TranscriptionTextDeltaEvent,
    TranscriptionTextDoneEvent,
    TranscriptionVerbose,
)

HELLO = Final(0, "Hello world.", 0, 2100, FinalReason.ENDPOINT, confidence=0.8, language="en",
              words=(Word("Hello", 0, 500, 0.9), Word("world.", 600, 2100, 0.7)))
EMPTY = Final(1, "", 2100, 2500, FinalReason.ENDPOINT)
AGAIN = Final(2, "How are you?", 3000, 4250, FinalReason.EOS,
              words=(Word("How", 3000, 3300), Word("are", 3300, 3600), Word("you?", 3600, 4250)))
FINALS = [HELLO, EMPTY, AGAIN]


def strict(model, data, known=()):
    """Validate as the SDK does with _strict_response_validation; also require every field the
    SDK marks required (present, not defaulted) and no field it does not know."""
    obj = model.model_validate(data)
    fields = type(obj).model_fields
    unknown = set(data) - set(fields) - set(known)
    assert not unknown, f"{model.__name__}: unknown {unknown}"
    missing = [n for n, f in fields.items() if f.is_required() and n not in data]
    assert not missing, f"{model.__name__}: missing {missing}"
    return obj


def form(**fields):
    return parse_form(fields)


def test_json_is_a_transcription_with_duration_usage():
    body, media = render(form(), FINALS, 4500)
    assert media == "application/json"
    data = json.loads(body)
    t = strict(Transcription, data)
    assert t.text == "Hello world. How are you?"
    assert data["usage"] == {"type": "duration", "seconds": 4.5}
    assert "logprobs" not in data


def test_json_logprobs_come_from_word_confidences():
    data = json.loads(render(form(**{"include[]": ["logprobs"]}), FINALS, 4500)[0])
    t = strict(Transcription, data)
    assert [p.token for p in t.logprobs] == ["Hello", "world."]  # AGAIN has no confidences
    assert t.logprobs[0].logprob == pytest.approx(math.log(0.9))
    assert data["logprobs"][0]["bytes"] == list(b"Hello")


def test_text_is_the_transcript_and_a_newline():
    assert render(form(response_format="text"), FINALS, 4500) == (
        "Hello world. How are you?\n", "text/plain; charset=utf-8")
    assert render(form(response_format="text"), [], 0)[0] == "\n"


def test_srt_and_vtt_exactly():
    srt, media = render(form(response_format="srt"), FINALS, 4500)
    assert media == "text/plain; charset=utf-8"
    assert srt == ("1\n00:00:00,000 --> 00:00:02,100\nHello world.\n\n"
                   "2\n00:00:03,000 --> 00:00:04,250\nHow are you?\n\n")
    vtt, media = render(form(response_format="vtt"), FINALS, 4500)
    assert media == "text/vtt; charset=utf-8"
    assert vtt == ("WEBVTT\n\n00:00:00.000 --> 00:00:02.100\nHello world.\n\n"
                   "00:00:03.000 --> 00:00:04.250\nHow are you?\n\n")
    late = Final(0, "Late.", 3_723_004, 3_725_000, FinalReason.EOS)
    assert render(form(response_format="srt"), [late], 0)[0].splitlines()[1] == (
        "01:02:03,004 --> 01:02:05,000")
    assert render(form(response_format="vtt"), [], 0)[0] == "WEBVTT\n\n"


def test_verbose_json_segments_by_default():
    body, media = render(form(response_format="verbose_json"), FINALS, 4500)
    assert media == "application/json"
    data = json.loads(body)
    v = strict(TranscriptionVerbose, data, known=["task"])  # OpenAI sends it; the SDK drops it
    for seg in data["segments"]:
        strict(openai.types.audio.TranscriptionSegment, seg)
    assert (v.task, v.language, v.duration, v.text) == (
        "transcribe", "english", 4.5, "Hello world. How are you?")
    assert v.usage.type == "duration" and v.usage.seconds == 4.5
    first, second = v.segments
    assert (first.id, first.seek, first.start, first.end, first.text) == (
        0, 0, 0.0, 2.1, " Hello world.")
    assert (second.id, second.seek, second.text) == (1, 300, " How are you?")
    assert first.avg_logprob == pytest.approx(math.log(0.8)) and second.avg_logprob == 0.0
    assert first.tokens == [] and first.temperature == 0.0 and first.no_speech_prob == 0.0
    assert first.compression_ratio > 0
    assert "words" not in data


def test_verbose_json_words_only_with_the_word_granularity():
    words = form(response_format="verbose_json", **{"timestamp_granularities[]": ["word"]})
    data = json.loads(render(words, FINALS, 4500)[0])
    v = strict(TranscriptionVerbose, data, known=["task"])  # OpenAI sends it; the SDK drops it
    for w in data["words"]:
        strict(openai.types.audio.TranscriptionWord, w)
    assert [(w.word, w.start, w.end) for w in v.words] == [
        ("Hello", 0.0, 0.5), ("world.", 0.6, 2.1), ("How", 3.0, 3.3), ("are", 3.3, 3.6),
        ("you?", 3.6, 4.25)]
    assert "segments" not in data
    both = form(response_format="verbose_json",
                **{"timestamp_granularities[]": ["word", "segment"]})
    data = json.loads(render(both, FINALS, 4500)[0])
    assert len(data["segments"]) == 2 and len(data["words"]) == 5


@pytest.mark.parametrize(("detected", "requested", "name"), [
    ("en", None, "english"), (None, "de", "german"), ("pt-BR", None, "portuguese"),
    ("xx", None, "xx"), (None, None, "unknown"), ("french", None, "french")])
def test_verbose_json_language_names(detected, requested, name):
    final = Final(0, "Hi.", 0, 500, FinalReason.EOS, language=detected)
    fields = {"response_format": "verbose_json"} | ({"language": requested} if requested else {})
    assert json.loads(render(parse_form(fields), [final], 500)[0])["language"] == name


def test_sse_deltas_concatenate_to_the_done_text():
    spoken = [f for f in FINALS if f.text]
    events = [delta_event(f, first=i == 0) for i, f in enumerate(spoken)]
    text = transcript(FINALS)
    done = done_event(text, token_usage(4500, text))
    for ev in events:
        strict(TranscriptionTextDeltaEvent, ev)
    d = strict(TranscriptionTextDoneEvent, done)
    assert "".join(ev["delta"] for ev in events) == d.text == "Hello world. How are you?"
    assert events[1]["delta"] == " How are you?"
    assert done["usage"] == {"type": "tokens", "input_tokens": 45, "output_tokens": 7,
                             "total_tokens": 52,
                             "input_token_details": {"audio_tokens": 45, "text_tokens": 0}}
    wire = "".join(sse_event(e) for e in [*events, done])
    chunks = wire.split("\n\n")
    assert chunks[-1] == "" and all(c.startswith("data: {") for c in chunks[:-1])
    assert json.loads(chunks[0].removeprefix("data: ")) == events[0]


def test_sse_delta_logprobs_only_when_asked_and_known():
    ev = delta_event(HELLO, first=True, include_logprobs=True)
    assert [p.token for p in strict(TranscriptionTextDeltaEvent, ev).logprobs] == [
        "Hello", "world."]
    assert "logprobs" not in delta_event(HELLO, first=True)
    assert "logprobs" not in delta_event(AGAIN, first=False, include_logprobs=True)


def test_form_defaults_and_sdk_encodings():
    f = parse_form({"model": "whisper-1", "file": "ignored", "stream": "false",
                    "temperature": "0", "known_speaker_names[]": ["a"], "languages[]": ["en"]})
    assert (f.model, f.response_format, f.temperature, f.stream) == (
        "whisper-1", "json", 0.0, False)
    assert f.timestamp_granularities == ("segment",) and f.include == () and f.silence_ms is None
    assert parse_form({"stream": "true"}).stream is True
    assert parse_form({}).model is None
    f = parse_form({"timestamp_granularities[]": ["word", "segment"], "include[]": ["logprobs"],
                    "keywords[]": ["sttd", " Kubernetes "], "language": "en", "prompt": "hi"})
    assert f.timestamp_granularities == ("word", "segment") and f.include == ("logprobs",)
    assert f.hotwords == ("sttd", "Kubernetes") and f.language == "en" and f.prompt == "hi"
    assert parse_form({"timestamp_granularities": "word"}).timestamp_granularities == ("word",)
    assert parse_form({"language": ""}).language is None


def test_chunking_strategy_as_the_sdk_and_curl_send_it():
    sdk = parse_form({"chunking_strategy[type]": "server_vad",
                      "chunking_strategy[silence_duration_ms]": "700",
                      "chunking_strategy[threshold]": "0.5"})
    assert sdk.silence_ms == 700
    curl = parse_form({"chunking_strategy": '{"type":"server_vad","silence_duration_ms":300}'})
    assert curl.silence_ms == 300
    assert parse_form({"chunking_strategy": "auto"}).silence_ms is None


@pytest.mark.parametrize(("fields", "param", "words"), [
    ({"temperature": "1.5"}, "temperature", "less than or equal to 1"),
    ({"temperature": "hot"}, "temperature", "valid number"),
    ({"temperature": "nan"}, "temperature", "finite"),
    ({"response_format": "xml"}, "response_format", "'verbose_json'"),
    ({"response_format": "diarized_json"}, "response_format", "not supported"),
    ({"timestamp_granularities[]": ["word", "char"]}, "timestamp_granularities", "'segment'"),
    ({"include[]": ["tokens"]}, "include", "'logprobs'"),
    ({"stream": "maybe"}, "stream", "boolean"),
    ({"stream": "true", "response_format": "srt"}, "stream", "response_format=srt"),
    ({"stream": "true", "response_format": "verbose_json"}, "stream", "verbose_json"),
    ({"model": "m" * 257}, "model", "256"),
    ({"prompt": "p" * 4001}, "prompt", "4000"),
    ({"language": "english!"}, "language", "BCP-47"),
    ({"chunking_strategy": "sometimes"}, "chunking_strategy", "'auto' or a JSON object"),
    ({"chunking_strategy[type]": "server_vad", "chunking_strategy[silence_duration_ms]": "5"},
     "chunking_strategy", "silence_duration_ms"),
])
def test_refusals_name_the_parameter(fields, param, words):
    with pytest.raises(ParamError) as info:
        parse_form(fields)
    assert isinstance(info.value, ProtocolError) and info.value.code == ErrorCode.BAD_REQUEST
    assert info.value.param == param
    assert words in info.value.message and param in info.value.message
    status, body = error_for(info.value)
    assert status == 400 and body["error"]["param"] == param


def test_stream_with_json_or_text_is_allowed():
    assert parse_form({"stream": "true", "response_format": "text"}).stream


def test_error_bodies_and_statuses():
    assert error_body("bad key", code="invalid_api_key") == {"error": {
        "message": "bad key", "type": "invalid_request_error", "param": None,
        "code": "invalid_api_key"}}
    expected = {ErrorCode.BAD_REQUEST: 400, ErrorCode.INVALID_AUDIO: 400,
                ErrorCode.UNSUPPORTED_AUDIO: 415, ErrorCode.UPLOAD_TOO_LARGE: 413,
                ErrorCode.AUDIO_TOO_LONG: 413, ErrorCode.UPLOAD_TIMEOUT: 408,
                ErrorCode.BACKEND_ERROR: 500, ErrorCode.INTERNAL_ERROR: 500,
                ErrorCode.SHUTTING_DOWN: 503}
    assert {c: status_for(c) for c in expected} == expected
    assert all(400 <= status_for(c) < 600 for c in ErrorCode)
    status, body = error_for(ProtocolError(ErrorCode.BACKEND_ERROR, "engine failed"))
    assert status == 500 and body == {"error": {"message": "engine failed", "type": "server_error",
                                                "param": None, "code": "backend_error"}}
    status, body = error_for(ProtocolError(ErrorCode.UNSUPPORTED_AUDIO, "not audio"))
    assert status == 415 and body["error"]["type"] == "invalid_request_error"


def test_model_list_matches_the_sdk():
    data = model_list(["whisper-1", "gpt-4o-transcribe"], created=1700000000)
    assert data["object"] == "list"
    models = [strict(Model, m) for m in data["data"]]
    assert [(m.id, m.object, m.created, m.owned_by) for m in models] == [
        ("whisper-1", "model", 1700000000, "sttd"), ("gpt-4o-transcribe", "model", 1700000000,
                                                     "sttd")]
