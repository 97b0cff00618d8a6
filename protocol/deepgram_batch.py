"""Deepgram's pre-recorded API, ``POST /v1/listen``: the audio as the raw body (any container,
or headerless with ``encoding`` + ``sample_rate``), the live API's query parameters, and
Deepgram's response: ``metadata`` plus ``results.channels[0].alternatives[0]`` with every
word, and ``results.utterances`` when ``utterances=true``.

A JSON body (``{"url": ...}``) is refused with 400: this server fetches nothing. The models
below give the OpenAPI schema; ``tests/test_deepgram.py`` checks bodies against the SDK's own
``ListenV1Response``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel

from protocol.audio import RawDecoder
from protocol.common import BEARER, TOKEN, ProtocolError, Upload
from protocol.deepgram import (
    ListenParams,
    ModelInfo,
    alternative,
    deepgram_error_body,
    now_iso,
    parse_listen,
    plain,
    seconds,
    words_json,
)
from session.events import ErrorCode, Final, FinalReason


class PrerecordedParams:
    """The parsed query, with what the batch route asks of every protocol's parameters."""

    stream: ClassVar[bool] = False

    def __init__(self, params: ListenParams) -> None:
        self.listen = params
        self.options = params.options(live=False)

    def raw_decoder(self) -> RawDecoder | None:
        p = self.listen
        return RawDecoder(p.raw_codec, p.sample_rate, p.channels) if p.raw_codec else None


class Word(BaseModel):
    word: str
    start: float
    end: float
    confidence: float
    punctuated_word: str | None = None


class Alternative(BaseModel):
    transcript: str
    confidence: float
    words: list[Word]


class Channel(BaseModel):
    alternatives: list[Alternative]


class Utterance(BaseModel):
    start: float
    end: float
    confidence: float
    channel: int
    transcript: str
    words: list[Word]
    id: str


class Results(BaseModel):
    channels: list[Channel]
    utterances: list[Utterance] | None = None


class Metadata(BaseModel):
    transaction_key: str
    request_id: str
    sha256: str
    created: str
    duration: float
    channels: int
    models: list[str]
    model_info: dict[str, dict[str, str]]


class ListenResponse(BaseModel):
    """The 200 body (Deepgram's ``ListenV1Response``)."""

    metadata: Metadata
    results: Results


STATUS = {
    ErrorCode.BAD_REQUEST: 400, ErrorCode.INVALID_AUDIO: 400,
    ErrorCode.UNSUPPORTED_AUDIO: 400,  # Deepgram: "corrupt or unsupported data" is a 400
    ErrorCode.AUDIO_TOO_LONG: 413, ErrorCode.UPLOAD_TOO_LARGE: 413,
    ErrorCode.UPLOAD_TIMEOUT: 408, ErrorCode.BACKEND_ERROR: 500,
    ErrorCode.INTERNAL_ERROR: 500,
}


class DeepgramBatchProtocol:
    """``POST /v1/listen``: Deepgram's credentials, 429 when full, ``err_code`` errors."""

    name = "deepgram_batch"
    credentials = (TOKEN, BEARER)
    auth_challenge = "Token"
    capacity_status = 429
    error_body = staticmethod(deepgram_error_body)
    form_model = ListenParams
    response_model = ListenResponse
    media_types = ("application/json",)

    def status_for(self, code: ErrorCode) -> int:
        return STATUS.get(code, 400)

    any_body_is_audio = True  # whatever the Content-Type (but JSON, refused below)

    def check_request(self, query: Mapping[str, Any], headers: Mapping[str, str]) -> None:
        """Before the body is read: the parameters, and no ``{"url": ...}`` body."""
        parse_listen(query, live=False)
        if headers.get("content-type", "").split(";")[0].strip().lower() == "application/json":
            raise ProtocolError(ErrorCode.BAD_REQUEST, "this server transcribes the request "
                                "body and fetches no URLs: send the audio itself (any "
                                "Content-Type but application/json)")

    def parse(self, fields: Mapping[str, Any]) -> PrerecordedParams:
        return PrerecordedParams(parse_listen(fields, live=False))

    def render(self, params: PrerecordedParams, finals: Sequence[Final], duration_ms: int,
               latency_ms: int, upload: Upload) -> tuple[str, str]:
        p = params.listen
        finals = [f for f in finals if f.text]
        whole = Final(
            segment_seq=0, text=" ".join(f.text for f in finals),
            start_ms=finals[0].start_ms if finals else 0,
            end_ms=finals[-1].end_ms if finals else 0, reason=FinalReason.EOS,
            words=tuple(w for f in finals for w in f.words),
            confidence=_mean([f.confidence for f in finals]),
            language=next((f.language for f in finals if f.language), None))
        results: dict[str, Any] = {"channels": [{"alternatives": [
            alternative(whole, p.formatted)]}]}
        if p.utterances:
            results["utterances"] = utterances(finals, p.utt_split, p.formatted)
        model = ModelInfo(upload.backend, upload.model, p.model)
        body = {"metadata": model.metadata(
            str(uuid.uuid4()), created=now_iso(), duration_s=seconds(duration_ms),
            sha256=upload.sha256, params=p), "results": results}
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")), "application/json"


def utterances(finals: Sequence[Final], split_s: float, formatted: bool) -> list[dict]:
    """Deepgram's utterances: runs of words with less than ``split_s`` between them (a
    segment without word times is one utterance)."""
    runs: list[list] = []  # [words, final] pieces
    split_ms = split_s * 1000
    for f in finals:
        if not f.words:
            runs.append([(), f])
            continue
        piece: list = []
        for w in f.words:
            if piece and w.start_ms - piece[-1].end_ms >= split_ms:
                runs.append([tuple(piece), f])
                piece = []
            piece.append(w)
        runs.append([tuple(piece), f])
    out = []
    for words, f in runs:
        if words:
            text = " ".join(w.word.strip() for w in words)
            start, end = words[0].start_ms, words[-1].end_ms
            confidence = _mean([w.confidence for w in words]) or 0.0
        else:
            text, start, end, confidence = f.text, f.start_ms, f.end_ms, f.confidence or 0.0
        out.append({"start": seconds(start), "end": seconds(end),
                    "confidence": round(confidence, 4), "channel": 0,
                    "transcript": text if formatted else plain(text),
                    "words": words_json(words, confidence, formatted),
                    "id": str(uuid.uuid4())})
    return out


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None
