"""kaldi-gstreamer-server's HTTP API, ``PUT``/``POST /client/dynamic/recognize``: the body is
the audio (chunked or not), raw with GStreamer caps in ``Content-Type`` (``audio/x-raw-int;
rate=16000``; defaults 16 kHz S16LE mono) or any container (sniffed). The answer is
``{"status": 0, "id": …, "hypotheses": [{"utterance": …}]}``, the finals joined with spaces.

Refusals keep KGS's shapes: a full server is HTTP 503 with the plain text ``No workers
available``; other errors carry the HTTP status and a KGS body ``{"status", "id", "message"}``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel
from starlette.responses import JSONResponse, PlainTextResponse, Response

from protocol.common import BEARER, QUERY_TOKEN, Upload
from protocol.kaldi_gst import AudioFormat, parse_caps, refusal_status
from session.events import ErrorCode, Final
from session.options import RecognitionOptions

_RAW_TYPES = ("audio/x-raw", "audio/x-mulaw", "audio/x-alaw")


class RecognizeParams:
    stream: ClassVar[bool] = False

    def __init__(self, fmt: AudioFormat) -> None:
        self.format = fmt
        self.options = RecognitionOptions(partials=False)

    def raw_decoder(self):
        return self.format.decoder(0) if self.format.codec else None


class NoFields(BaseModel):
    """Nothing in the query: the format is in ``Content-Type``."""


class Hypothesis(BaseModel):
    utterance: str


class RecognizeResponse(BaseModel):
    status: int
    id: str
    hypotheses: list[Hypothesis]


STATUS = {ErrorCode.AUDIO_TOO_LONG: 413, ErrorCode.UPLOAD_TOO_LARGE: 413,
          ErrorCode.UPLOAD_TIMEOUT: 408, ErrorCode.BACKEND_ERROR: 500,
          ErrorCode.INTERNAL_ERROR: 500}


class KaldiGstBatchProtocol:
    name = "kaldi_gst_batch"
    credentials = (QUERY_TOKEN, BEARER)
    auth_challenge = "Bearer"
    capacity_status = 503
    form_model = NoFields
    response_model = RecognizeResponse
    media_types = ("application/json",)
    any_body_is_audio = True  # curl --data-binary sends a form type

    @staticmethod
    def error_body(status: int, code: str, message: str, param: str | None = None) -> dict:
        return {"status": refusal_status(status), "id": str(uuid.uuid4()), "message": message}

    def error_response(self, status: int, code: str, message: str,
                       headers: dict[str, str] | None = None) -> Response:
        if code == "capacity":
            return PlainTextResponse("No workers available", status, headers=headers)
        return JSONResponse(self.error_body(status, code, message), status, headers=headers)

    def status_for(self, code: ErrorCode) -> int:
        return STATUS.get(code, 400)

    def check_request(self, query: Mapping[str, Any],
                      headers: Mapping[str, str]) -> RecognizeParams:
        """The audio format, from ``Content-Type``, before the body is read."""
        content_type = headers.get("content-type", "")
        raw = content_type.strip().lower().startswith(_RAW_TYPES)
        return RecognizeParams(parse_caps(content_type) if raw else AudioFormat())

    def parse(self, fields: Mapping[str, Any]) -> RecognizeParams:
        return RecognizeParams(AudioFormat())  # not reached: check_request decides

    def render(self, params: RecognizeParams, finals: Sequence[Final], duration_ms: int,
               latency_ms: int, upload: Upload) -> tuple[str, str]:
        utterance = " ".join(f.text for f in finals if f.text)
        body = {"status": 0, "id": str(uuid.uuid4()), "hypotheses": [{"utterance": utterance}]}
        return json.dumps(body, ensure_ascii=False), "application/json"
