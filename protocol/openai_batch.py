"""OpenAI's ``POST /v1/audio/transcriptions`` wire: form fields, the five response formats,
the SSE events of ``stream=true``, error bodies and ``GET /v1/models``.

The response models mirror the ``openai`` SDK's own types field for field instead of importing
them: the server's default install has no ``openai``, and FastAPI builds the OpenAPI schema from
these. ``tests/test_openai_batch_wire.py`` validates every body against the SDK's types.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from protocol.batch import _clock
from protocol.common import BEARER, ProtocolError, Upload
from protocol.fields import MAX_HOTWORD_CHARS, MAX_HOTWORDS, Language
from session.events import ErrorCode, Final
from session.options import RecognitionOptions

ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
MEDIA_TYPES = {"json": "application/json", "verbose_json": "application/json",
               "text": "text/plain; charset=utf-8", "srt": "text/plain; charset=utf-8",
               "vtt": "text/vtt; charset=utf-8"}
STREAM_FORMATS = ("json", "text")  # OpenAI's streaming models answer only these
AUDIO_TOKENS_PER_SECOND = 10  # stand-in for usage: we have no audio tokenizer
TEXT_TOKENS_PER_WORD = 1.3  # stand-in: a rough BPE tokens-per-word ratio for English
LANGUAGE_NAMES = {  # verbose_json names the language as Whisper does
    "ar": "arabic", "cs": "czech", "da": "danish", "de": "german", "el": "greek",
    "en": "english", "es": "spanish", "fa": "persian", "fi": "finnish", "fr": "french",
    "he": "hebrew", "hi": "hindi", "hu": "hungarian", "id": "indonesian", "it": "italian",
    "ja": "japanese", "ko": "korean", "nl": "dutch", "no": "norwegian", "pl": "polish",
    "pt": "portuguese", "ro": "romanian", "ru": "russian", "sv": "swedish", "th": "thai",
    "tr": "turkish", "uk": "ukrainian", "vi": "vietnamese", "zh": "chinese",
}


class ParamError(ProtocolError):
    """A bad form field; ``param`` fills OpenAI's ``error.param``."""

    def __init__(self, param: str | None, message: str) -> None:
        super().__init__(ErrorCode.BAD_REQUEST, message)
        self.param = param


class ServerVad(BaseModel):
    type: Literal["server_vad"]
    prefix_padding_ms: int | None = Field(None, ge=0, le=10000)
    silence_duration_ms: int | None = Field(None, ge=100, le=10000)  # as the native vad_silence_ms
    threshold: float | None = Field(None, ge=0, le=1)


class TranscriptionForm(BaseModel):
    """The form fields of a request. ``known_speaker_*[]`` and ``languages[]`` are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str | None = Field(None, max_length=256)  # None: the route names the served model
    language: Language | None = None
    prompt: str | None = Field(None, max_length=4000)
    response_format: ResponseFormat = "json"
    temperature: float = Field(0.0, ge=0, le=1, allow_inf_nan=False)  # backends decode greedily
    timestamp_granularities: tuple[Literal["word", "segment"], ...] = ("segment",)
    stream: bool = False
    include: tuple[Literal["logprobs"], ...] = ()
    chunking_strategy: ServerVad | None = None  # "auto" = None: our VAD always segments
    keywords: tuple[str, ...] = Field((), max_length=MAX_HOTWORDS)

    @field_validator("chunking_strategy", mode="before")
    @classmethod
    def _auto_or_json(cls, v: Any) -> Any:
        if not isinstance(v, str):
            return v
        if v == "auto":
            return None
        try:  # curl: -F 'chunking_strategy={"type":"server_vad",…}'
            return json.loads(v)
        except ValueError:
            raise ValueError("expected 'auto' or a JSON object") from None

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        words = tuple(w.strip() for w in v if w.strip())
        if any(len(w) > MAX_HOTWORD_CHARS for w in words):
            raise ValueError(f"each keyword at most {MAX_HOTWORD_CHARS} characters")
        return words

    @property
    def hotwords(self) -> tuple[str, ...]:
        return self.keywords

    @property
    def silence_ms(self) -> int | None:
        vad = self.chunking_strategy
        return vad.silence_duration_ms if vad else None

    @property
    def options(self) -> RecognitionOptions:
        vad = self.chunking_strategy
        return RecognitionOptions(
            language=self.language or "auto", hotwords=self.hotwords,
            vad_silence_ms=self.silence_ms, partials=False,
            vad_level=vad.threshold if vad else None,
            preroll_ms=vad.prefix_padding_ms if vad else None)


_LISTS = {"timestamp_granularities", "include", "keywords"}


def parse_form(fields: Mapping[str, Any]) -> TranscriptionForm:
    """Validate multipart fields: ``name[]`` (repeated, a list) or ``name``; the SDK sends
    ``chunking_strategy[key]`` parts for the object. Empty values count as absent.

    Raises:
        ParamError: naming the first bad field, as OpenAI's ``param``.
    """
    data: dict[str, Any] = {}
    vad: dict[str, str] = {}
    for key, value in fields.items():
        values = [v for v in (value if isinstance(value, list) else [value]) if v != ""]
        name = key.removesuffix("[]")
        if name.startswith("chunking_strategy[") and name.endswith("]") and values:
            vad[name[len("chunking_strategy["):-1]] = values[-1]
        elif name in _LISTS:
            data[name] = values
        elif values:
            data[name] = values[-1]
    if vad:
        data["chunking_strategy"] = vad
    if data.get("response_format") == "diarized_json":
        raise ParamError("response_format", "response_format 'diarized_json' is not supported: "
                         "this server does not diarize")
    try:
        form = TranscriptionForm.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        parts = [f"Invalid value for '{'.'.join(p for p in e['loc'] if isinstance(p, str))}': "
                 + e["msg"].removeprefix("Value error, ") for e in errors]
        raise ParamError(str(errors[0]["loc"][0]), "; ".join(parts)) from None
    if form.stream and form.response_format not in STREAM_FORMATS:
        raise ParamError("stream", f"stream is not supported for response_format="
                         f"{form.response_format}; use json or text")
    return form


class DurationUsage(BaseModel):
    type: Literal["duration"] = "duration"
    seconds: float


class Logprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class TranscriptionJSON(BaseModel):
    text: str
    usage: DurationUsage
    logprobs: list[Logprob] | None = None


class Segment(BaseModel):
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


class TimedWord(BaseModel):
    word: str
    start: float
    end: float


class TranscriptionVerboseJSON(BaseModel):
    task: Literal["transcribe"] = "transcribe"
    language: str
    duration: float
    text: str
    segments: list[Segment] | None = None
    words: list[TimedWord] | None = None
    usage: DurationUsage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "sttd"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def transcript(finals: Sequence[Final]) -> str:
    return " ".join(f.text for f in finals if f.text)


def render(form: TranscriptionForm, finals: Sequence[Final], duration_ms: int) -> tuple[str, str]:
    """The non-streamed body of ``form.response_format`` and its media type."""
    fmt = form.response_format
    finals = [f for f in finals if f.text]
    if fmt == "text":
        body = transcript(finals) + "\n"
    elif fmt == "srt":
        body = "".join(f"{i}\n{_clock(f.start_ms, ',')} --> {_clock(f.end_ms, ',')}\n{f.text}\n\n"
                       for i, f in enumerate(finals, 1))
    elif fmt == "vtt":
        body = "WEBVTT\n\n" + "".join(
            f"{_clock(f.start_ms, '.')} --> {_clock(f.end_ms, '.')}\n{f.text}\n\n" for f in finals)
    elif fmt == "json":
        logprobs = [p for f in finals for p in _logprobs(f) or ()] if form.include else None
        body = TranscriptionJSON(text=transcript(finals), usage=_duration(duration_ms),
                                 logprobs=logprobs or None).model_dump_json(exclude_none=True)
    else:
        body = _verbose(form, finals, duration_ms).model_dump_json(exclude_none=True)
    return body, MEDIA_TYPES[fmt]


def _verbose(form: TranscriptionForm, finals: list[Final],
             duration_ms: int) -> TranscriptionVerboseJSON:
    detected = next((f.language for f in finals if f.language), None)
    code = detected or (form.language if form.language not in (None, "auto") else None)
    segments = [_segment(i, f) for i, f in enumerate(finals)]
    words = [TimedWord(word=w.word.strip(), start=w.start_ms / 1000, end=w.end_ms / 1000)
             for f in finals for w in f.words if w.word.strip()]
    return TranscriptionVerboseJSON(
        language=LANGUAGE_NAMES.get((code or "").lower().split("-")[0], code or "unknown"),
        duration=duration_ms / 1000, text=transcript(finals),
        segments=segments if "segment" in form.timestamp_granularities else None,
        words=words if "word" in form.timestamp_granularities else None,
        usage=_duration(duration_ms))


def _segment(i: int, f: Final) -> Segment:
    raw = f.text.encode()
    return Segment(
        id=i, seek=f.start_ms // 10,  # Whisper counts seek in 10 ms frames
        start=f.start_ms / 1000, end=f.end_ms / 1000, text=" " + f.text,  # Whisper's space
        tokens=[],  # stand-in: backends give no token ids
        temperature=0.0,  # real: every backend decodes greedily
        avg_logprob=_ln(f.confidence) if f.confidence is not None else 0.0,  # ln(mean word prob)
        compression_ratio=len(raw) / len(zlib.compress(raw)),  # real, computed as Whisper does
        no_speech_prob=0.0)  # stand-in: finals come from segments the VAD heard as speech


def _duration(duration_ms: int) -> DurationUsage:
    return DurationUsage(seconds=duration_ms / 1000)


def _ln(p: float) -> float:
    return math.log(min(max(p, 1e-10), 1.0))


def _logprobs(f: Final) -> list[Logprob] | None:
    """One entry per word (tokens we have not), when every word has a confidence."""
    if not f.words or any(w.confidence is None for w in f.words):
        return None
    return [Logprob(token=w.word, logprob=_ln(w.confidence or 0.0), bytes=list(w.word.encode()))
            for w in f.words]


def sse_event(obj: Mapping[str, Any] | BaseModel) -> str:
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(exclude_none=True)
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


def delta_event(final: Final, *, first: bool, include_logprobs: bool = False) -> dict[str, Any]:
    """``transcript.text.delta`` of one non-empty final. Deltas concatenate to ``transcript``:
    every one but the first leads with a space."""
    event: dict[str, Any] = {"type": "transcript.text.delta",
                             "delta": final.text if first else " " + final.text}
    logprobs = _logprobs(final) if include_logprobs else None
    if logprobs:
        event["logprobs"] = [p.model_dump() for p in logprobs]
    return event


def token_usage(duration_ms: int, text: str) -> dict[str, Any]:
    """Stand-in token counts: ``AUDIO_TOKENS_PER_SECOND`` and ``TEXT_TOKENS_PER_WORD``."""
    audio = math.ceil(duration_ms / 1000 * AUDIO_TOKENS_PER_SECOND)
    output = math.ceil(len(text.split()) * TEXT_TOKENS_PER_WORD)
    return {"type": "tokens", "input_tokens": audio, "output_tokens": output,
            "total_tokens": audio + output,
            "input_token_details": {"audio_tokens": audio, "text_tokens": 0}}


def done_event(text: str, usage: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "transcript.text.done", "text": text, "usage": dict(usage)}


# 4xx are "invalid_request_error", 5xx "server_error". The SDK retries 408/429/5xx, so only
# failures a retry may cure get those. Refusals without an ErrorCode are the route's: 401 with
# code "invalid_api_key", and 503 ("server_error") when full, not ready or draining.
STATUS: dict[ErrorCode, int] = {
    ErrorCode.BAD_REQUEST: 400, ErrorCode.INVALID_AUDIO: 400, ErrorCode.UNSUPPORTED_AUDIO: 415,
    ErrorCode.AUDIO_TOO_LONG: 413, ErrorCode.UPLOAD_TOO_LARGE: 413,
    ErrorCode.SESSION_TOO_LONG: 413, ErrorCode.FRAME_TOO_LARGE: 413,
    ErrorCode.UPLOAD_TIMEOUT: 408, ErrorCode.IDLE_TIMEOUT: 408, ErrorCode.SLOW_CONSUMER: 408,
    ErrorCode.AUDIO_QUEUE_OVERFLOW: 503, ErrorCode.SHUTTING_DOWN: 503,
    ErrorCode.BACKEND_ERROR: 500, ErrorCode.INTERNAL_ERROR: 500,
}


def status_for(code: ErrorCode) -> int:
    return STATUS.get(code, 500)


def error_body(message: str, *, type: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_for(exc: ProtocolError) -> tuple[int, dict[str, Any]]:
    """Status and body of a refused request; ``error.code`` is our ``ErrorCode``."""
    status = status_for(exc.code)
    return status, error_body(exc.message, code=exc.code.value, param=getattr(exc, "param", None),
                              type="server_error" if status >= 500 else "invalid_request_error")


def model_list(model_ids: Sequence[str], created: int = 0) -> dict[str, Any]:
    return ModelList(data=[ModelCard(id=m, created=created) for m in model_ids]).model_dump()


def openai_error_body(status: int, code: str, message: str, param: str | None = None) -> dict:
    """A refusal (401, 403, 400, 429/503) as OpenAI's error object."""
    return error_body(message, code="invalid_api_key" if status == 401 else code, param=param,
                      type="server_error" if status >= 500 else "invalid_request_error")


class OpenAIBatchProtocol:
    """``POST /v1/audio/transcriptions``: multipart form as the SDK sends it, OpenAI's error
    object, and server-sent events for ``stream=true``."""

    name = "openai_batch"
    credentials = (BEARER,)
    auth_challenge = "Bearer"
    capacity_status = 429  # the SDK backs off and retries 429
    error_body = staticmethod(openai_error_body)
    form_model = TranscriptionForm
    response_model = TranscriptionJSON
    media_types = ("application/json", "text/plain", "text/vtt", "text/event-stream")

    def status_for(self, code: ErrorCode) -> int:
        return status_for(code)

    def parse(self, fields: Mapping[str, Any]) -> TranscriptionForm:
        return parse_form(fields)

    def render(self, form: TranscriptionForm, finals: Sequence[Final], duration_ms: int,
               latency_ms: int, upload: Upload) -> tuple[str, str]:
        return render(form, finals, duration_ms)

    def stream_delta(self, form: TranscriptionForm, final: Final, first: bool) -> str:
        return sse_event(delta_event(final, first=first, include_logprobs=bool(form.include)))

    def stream_done(self, finals: Sequence[Final], duration_ms: int) -> str:
        text = transcript(finals)
        return sse_event(done_event(text, token_usage(duration_ms, text)))

    def stream_error(self, exc: ProtocolError) -> str:
        return sse_event(error_for(exc)[1])
