"""Responses of ``POST /v1/stt/transcribe``: JSON (realtime-stt-ws's ``text``, ``duration_ms``,
``latency_ms``, plus segments with words), plain text, SRT and WebVTT."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocol.common import BEARER, QUERY_TOKEN, ProtocolError, Upload, refusal_body
from protocol.fields import Hotwords, Language, describe
from session.events import ErrorCode, Final
from session.options import RecognitionOptions

ResponseFormat = Literal["json", "text", "srt", "vtt"]
MEDIA_TYPES = {"json": "application/json", "text": "text/plain; charset=utf-8",
               "srt": "application/x-subrip; charset=utf-8", "vtt": "text/vtt; charset=utf-8"}


class BatchParams(BaseModel):
    """Query or form fields of a transcription request."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    language: Language = Field("auto", description="'auto' or a BCP-47 tag such as 'en'.")
    hotwords: Hotwords = Field((), description="Comma-separated words to favour.")
    response_format: ResponseFormat = "json"
    vad_silence_ms: int | None = Field(None, ge=100, le=10000)


    stream: ClassVar[bool] = False  # one response, once the whole file is recognised

    @property
    def options(self) -> RecognitionOptions:
        return RecognitionOptions(language=self.language, hotwords=self.hotwords,
                                  vad_silence_ms=self.vad_silence_ms, partials=False)


class Word(BaseModel):
    word: str
    start_ms: int
    end_ms: int
    confidence: float | None


class Segment(BaseModel):
    start_ms: int
    end_ms: int
    text: str
    confidence: float | None
    reason: str
    words: list[Word]


class Transcript(BaseModel):
    """The ``json`` response (the OpenAPI schema is generated from it)."""

    text: str
    duration_ms: int
    latency_ms: int
    language: str | None
    segments: list[Segment]


STATUS = {
    ErrorCode.BAD_REQUEST: 400, ErrorCode.INVALID_AUDIO: 400, ErrorCode.UNSUPPORTED_AUDIO: 415,
    ErrorCode.AUDIO_TOO_LONG: 413, ErrorCode.UPLOAD_TOO_LARGE: 413,
    ErrorCode.UPLOAD_TIMEOUT: 408, ErrorCode.BACKEND_ERROR: 500,
    ErrorCode.INTERNAL_ERROR: 500,
}


class NativeBatchProtocol:
    """``POST /v1/stt/transcribe``: parameters in the query or the form, sttd's error object."""

    name = "native_batch"
    credentials = (BEARER, QUERY_TOKEN)
    auth_challenge = "Bearer"
    capacity_status = 503
    error_body = staticmethod(refusal_body)
    form_model = BatchParams
    response_model = Transcript
    media_types = ("application/json", "text/plain", "application/x-subrip", "text/vtt")

    def status_for(self, code: ErrorCode) -> int:
        return STATUS.get(code, 400)

    def parse(self, fields: dict) -> BatchParams:
        return parse_params(fields)

    def render(self, params: BatchParams, finals: Sequence[Final], duration_ms: int,
               latency_ms: int, upload: Upload) -> tuple[str, str]:
        fmt = params.response_format
        return render(fmt, finals, duration_ms, latency_ms), MEDIA_TYPES[fmt]


def parse_params(fields: dict[str, str]) -> BatchParams:
    try:
        return BatchParams.model_validate(fields)
    except ValidationError as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, describe(exc)) from None


def render(fmt: ResponseFormat, finals: Sequence[Final], duration_ms: int,
           latency_ms: int) -> str:
    finals = [f for f in finals if f.text]
    if fmt == "text":
        return " ".join(f.text for f in finals) + "\n"
    if fmt == "srt":
        return "\n".join(f"{i}\n{_clock(f.start_ms, ',')} --> {_clock(f.end_ms, ',')}\n{f.text}\n"
                         for i, f in enumerate(finals, 1))
    if fmt == "vtt":
        return "WEBVTT\n\n" + "\n".join(
            f"{_clock(f.start_ms, '.')} --> {_clock(f.end_ms, '.')}\n{f.text}\n" for f in finals)
    languages = [f.language for f in finals if f.language]
    body = {
        "text": " ".join(f.text for f in finals),
        "duration_ms": duration_ms,
        "latency_ms": latency_ms,
        "language": languages[0] if languages else None,
        "segments": [_segment(f) for f in finals],
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def _segment(f: Final) -> dict[str, Any]:
    return {"start_ms": f.start_ms, "end_ms": f.end_ms, "text": f.text,
            "confidence": f.confidence, "reason": f.reason.value,
            "words": [{"word": w.word, "start_ms": w.start_ms, "end_ms": w.end_ms,
                       "confidence": w.confidence} for w in f.words]}


def _clock(ms: int, sep: str) -> str:
    hours, rest = divmod(max(0, ms), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{sep}{millis:03d}"
