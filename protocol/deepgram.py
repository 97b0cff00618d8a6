"""Deepgram's live API on ``GET /v1/listen`` (WebSocket), as ``deepgram-sdk``, LiveKit's and
Pipecat's Deepgram plugins speak it; the query parameters and result shapes are shared with
the pre-recorded ``POST /v1/listen`` (``protocol.deepgram_batch``).

Binary frames are audio: raw (``encoding`` + ``sample_rate``) or a container, sniffed when
``encoding`` is absent. Text frames are JSON control messages: ``KeepAlive`` (resets the idle
timer, nothing else), ``Finalize`` (the open segment's final comes back with
``from_finalize: true``; an empty one when nothing was open), ``CloseStream`` (flush, then
``Metadata`` and close 1000), ``Configure`` (new keyterms and formatting mid-stream).

Each sttd segment is one ``Results`` with ``is_final: true``; ``speech_final`` is true when
silence ended it (``endpointing`` ms of it), not when ``Finalize``, the segment length limit or
a shutdown cut it. ``UtteranceEnd`` is sttd's end of turn (``utterance_end_ms`` of silence
after the last word). Times are seconds from the start of the stream. Without ``punctuate``
or ``smart_format`` the transcript is plain lower-case words, as Deepgram's is.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from backends.base import Word
from protocol.audio import RawDecoder
from protocol.common import (
    BEARER,
    NOTHING,
    TOKEN,
    AudioIn,
    Close,
    Command,
    Configure,
    Credential,
    Inbound,
    Outbound,
    ProtocolError,
    close_for,
)
from protocol.container import ContainerDecoder
from protocol.fields import MAX_HOTWORD_CHARS, MAX_HOTWORDS, check_language, describe
from protocol.pcm import MIN_RATE
from session.events import (
    AudioDropped,
    Cleared,
    Committed,
    Configured,
    EndOfTurn,
    ErrorCode,
    Event,
    Final,
    FinalReason,
    InputRejected,
    Partial,
    Pong,
    PostprocessFailed,
    Ready,
    SegmentFailed,
    SessionEnd,
    SessionError,
    SpeechStarted,
    SpeechStopped,
)
from session.options import RecognitionOptions

MAX_CONTROL_CHARS = 4096
# Deepgram's default endpointing is 10 ms; segments that short cost Whisper accuracy and a
# decode per breath. Shorter values are raised to this (docs/protocol.md).
MIN_ENDPOINTING_MS = 100
RAW_ENCODINGS = {"linear16": "pcm_s16le", "linear32": "pcm_f32le", "mulaw": "mulaw",
                 "alaw": "alaw"}
CONTAINER_ENCODINGS = {"flac": "flac", "ogg-opus": "ogg", "opus": "auto"}  # opus: Ogg or WebM
UNSUPPORTED_ENCODINGS = ("amr-nb", "amr-wb", "speex", "g729")
# Features that change what Deepgram returns but sttd does not do: accepted, and named in
# the response's warnings when asked for (docs/protocol.md has the whole mapping).
NOT_APPLIED = {
    "diarize": "speaker labels are not produced",
    "profanity_filter": "no profanity filter is applied",
    "redact": "nothing is redacted",
    "filler_words": "filler words are kept or dropped as the model does",
    "detect_entities": "no entities are detected",
    "detect_language": "the language is not detected; the model's own is used",
    "dictation": "spoken punctuation is not converted",
    "search": "no search is performed",
    "replace": "no replacements are made",
    "sentiment": "no sentiment is analysed",
    "topics": "no topics are detected",
    "intents": "no intents are detected",
    "summarize": "no summary is made",
    "paragraphs": "no paragraphs are formed",
    "measurements": "measurements are written as the model writes them",
}
_PUNCTUATION = re.compile(r"[!?;:\"“”«»()\[\]{}…]|(?<!\d)[.,]|[.,](?!\d)")
_LISTS = ("keywords", "keyterm", "tag", "redact", "search", "replace")


class ListenParams(BaseModel):
    """The query parameters of ``/v1/listen``, live and pre-recorded. Unknown ones are
    ignored, as Deepgram ignores them."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str | None = Field(None, max_length=128)
    language: str = "auto"
    encoding: str | None = None
    sample_rate: int | None = Field(None, ge=MIN_RATE, le=48000)
    channels: int = Field(1, ge=1, le=8)
    multichannel: bool = False
    interim_results: bool = False
    endpointing: int | None | Literal[False] = None  # ms; False: Finalize ends segments
    utterance_end_ms: int | None = Field(None, ge=1000, le=60000)
    vad_events: bool = False
    punctuate: bool = False
    smart_format: bool = False
    keywords: tuple[str, ...] = Field((), max_length=MAX_HOTWORDS)
    keyterm: tuple[str, ...] = Field((), max_length=MAX_HOTWORDS)
    tag: tuple[str, ...] = ()
    callback: str | None = None
    utterances: bool = False  # pre-recorded
    utt_split: float = Field(0.8, ge=0.1, le=10)  # pre-recorded: silence that splits one
    diarize: bool = False
    numerals: bool = False
    profanity_filter: bool = False
    redact: tuple[str, ...] = ()
    filler_words: bool = False
    detect_entities: bool = False
    detect_language: bool = False
    dictation: bool = False
    search: tuple[str, ...] = ()
    replace: tuple[str, ...] = ()
    sentiment: bool = False
    topics: bool = False
    intents: bool = False
    summarize: bool | str = False
    paragraphs: bool = False
    measurements: bool = False

    @field_validator("language")
    @classmethod
    def _language(cls, v: str) -> str:
        return "auto" if v == "multi" else check_language(v)

    @field_validator("endpointing", mode="before")
    @classmethod
    def _endpointing(cls, v: Any) -> Any:
        if isinstance(v, str) and v.lower() in ("false", "true"):
            return None if v.lower() == "true" else False
        return v

    @field_validator("endpointing")
    @classmethod
    def _endpointing_range(cls, v: Any) -> Any:
        if isinstance(v, int) and v is not False and not 0 <= v <= 10000:
            raise ValueError("endpointing must be false or a number of ms from 0 to 10000")
        return None if v == 0 and v is not False else v

    @field_validator("keywords", "keyterm")
    @classmethod
    def _terms(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any(len(t) > MAX_HOTWORD_CHARS for t in v):
            raise ValueError(f"each term at most {MAX_HOTWORD_CHARS} characters")
        return v

    @property
    def raw_codec(self) -> str | None:
        return RAW_ENCODINGS.get(self.encoding or "")

    @property
    def hotwords(self) -> tuple[str, ...]:
        """``keyterm`` as given, ``keywords`` without their ``:intensifier``."""
        terms = [*self.keyterm, *(k.rsplit(":", 1)[0] if _boost(k) else k
                                  for k in self.keywords)]
        return tuple(dict.fromkeys(t.strip() for t in terms if t.strip()))[:MAX_HOTWORDS]

    @property
    def formatted(self) -> bool:
        return self.punctuate or self.smart_format

    def options(self, *, live: bool) -> RecognitionOptions:
        silence = self.endpointing
        return RecognitionOptions(
            language=self.language, hotwords=self.hotwords,
            endpointing=silence is not False,
            vad_silence_ms=(None if silence is None or silence is False
                            else max(MIN_ENDPOINTING_MS, silence)),
            partials=live and self.interim_results,
            turn_silence_ms=self.utterance_end_ms if live else None,
            numerals=self.numerals or self.smart_format,  # smart_format writes digits too
        )

    def warnings(self) -> list[dict[str, str]]:
        """Deepgram's ``metadata.warnings`` for the features asked for and not applied."""
        out = []
        for name, effect in NOT_APPLIED.items():
            if getattr(self, name):
                out.append({"parameter": name, "type": "unsupported_feature",
                            "message": f"{name} is not supported by this server: {effect}"})
        return out


def _boost(keyword: str) -> bool:
    _, sep, number = keyword.rpartition(":")
    try:
        return bool(sep) and float(number) == float(number)
    except ValueError:
        return False


def parse_listen(query: Mapping[str, Any], *, live: bool) -> ListenParams:
    """Validated parameters; raises ProtocolError (400) naming what is wrong."""
    data = _fields(query)
    try:
        params = ListenParams.model_validate(data)
    except ValidationError as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, describe(exc)) from None
    if params.callback is not None:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "callback is not supported: this server "
                            "makes no outbound requests; read the results from the response")
    encoding = params.encoding
    if encoding in UNSUPPORTED_ENCODINGS:
        raise ProtocolError(ErrorCode.UNSUPPORTED_AUDIO, f"encoding={encoding} is not "
                            "supported; use linear16, linear32, mulaw, alaw, flac, opus, "
                            "ogg-opus or a container (no encoding)")
    if encoding is not None and encoding not in RAW_ENCODINGS | CONTAINER_ENCODINGS:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"unknown encoding {encoding[:40]!r}")
    if params.raw_codec and params.sample_rate is None:
        raise ProtocolError(ErrorCode.BAD_REQUEST,
                            f"sample_rate is required with encoding={encoding}")
    if params.multichannel and params.channels > 1:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "multichannel=true is not supported: send "
                            "one stream per channel, or multichannel=false to downmix")
    return params


def _fields(query: Mapping[str, Any]) -> dict[str, Any]:
    """Query values by name; repeated names (``keyterm=a&keyterm=b``) and list-valued ones
    become tuples, whatever the container."""
    if hasattr(query, "multi_items"):
        data: dict[str, Any] = {}
        for key, value in query.multi_items():
            data.setdefault(key, []).append(value)
    else:
        data = {k: v if isinstance(v, list) else [v] for k, v in query.items()}
    return {k: tuple(v) if k in _LISTS else v[-1] for k, v in data.items()}


def decoder_for(params: ListenParams, max_seconds: float):
    codec = params.raw_codec
    if codec is not None:
        return RawDecoder(codec, params.sample_rate, params.channels)
    return ContainerDecoder(CONTAINER_ENCODINGS.get(params.encoding or "", "auto"),
                            max_seconds=max_seconds)


# -- what live and pre-recorded results share --------------------------------------------


def deepgram_error_body(status: int, code: str, message: str,
                        param: str | None = None) -> dict[str, str]:
    """Deepgram's error object (HTTP refusals and pre-recorded errors)."""
    codes = {401: "INVALID_AUTH", 403: "INSUFFICIENT_PERMISSIONS", 429: "TOO_MANY_REQUESTS",
             413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}
    return {"err_code": codes.get(status, "Bad Request" if status == 400 else code.upper()),
            "err_msg": message, "request_id": str(uuid.uuid4())}


class ModelInfo:
    """How the served model is named in results: a stable uuid, name, version and arch."""

    def __init__(self, backend: str, model: str, requested: str | None = None) -> None:
        self.uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"sttd:{backend}:{model}"))
        self.info = {"name": model, "version": "sttd", "arch": backend}
        self.requested = requested

    def metadata(self, request_id: str, *, created: str, duration_s: float, sha256: str,
                 params: ListenParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "transaction_key": "deprecated", "request_id": request_id, "sha256": sha256,
            "created": created, "duration": duration_s, "channels": 1,
            "models": [self.uuid], "model_info": {self.uuid: self.info},
        }
        if params.tag:
            body["tags"] = list(params.tag)
        if warnings := params.warnings():
            body["warnings"] = warnings
        return body


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def plain(text: str) -> str:
    """Deepgram's unformatted form: lower case, no punctuation (decimal points kept)."""
    return " ".join(_PUNCTUATION.sub(" ", text).lower().split())


def seconds(ms: int) -> float:
    return round(ms / 1000, 3)


def words_json(words: tuple[Word, ...], fallback: float | None,
               formatted: bool) -> list[dict[str, Any]]:
    out = []
    for w in words:
        confidence = w.confidence if w.confidence is not None else fallback or 0.0
        entry: dict[str, Any] = {"word": plain(w.word) or w.word.strip(),
                                 "start": seconds(w.start_ms), "end": seconds(w.end_ms),
                                 "confidence": round(confidence, 4)}
        if formatted:
            entry["punctuated_word"] = w.word.strip()
        out.append(entry)
    return out


def alternative(f: Final, formatted: bool) -> dict[str, Any]:
    words = f.words
    confidence = f.confidence
    if confidence is None:
        known = [w.confidence for w in words if w.confidence is not None]
        confidence = sum(known) / len(known) if known else 0.0
    alt: dict[str, Any] = {"transcript": f.text if formatted else plain(f.text),
                           "confidence": round(confidence, 4),
                           "words": words_json(words, confidence, formatted)}
    if f.language:
        alt["languages"] = [f.language]
    return alt


# -- the live protocol -------------------------------------------------------------------


class DeepgramProtocol:
    """Refused with an HTTP status and Deepgram's error body before the upgrade (the SDK
    turns 401 into "invalid credentials"); ``Authorization: Token <key>``, ``bearer <jwt>``,
    or the browser's ``Sec-WebSocket-Protocol: token, <key>``."""

    name = "deepgram"
    credentials = (TOKEN, BEARER, Credential("subprotocol_pair", "token"),
                   Credential("subprotocol_pair", "bearer"))
    auth_challenge = "Token"
    capacity_status = 429  # Deepgram's answer to too many concurrent streams
    error_body = staticmethod(deepgram_error_body)

    def subprotocol(self, offered: list[str]) -> str | None:
        return next((p for p in ("token", "bearer") if p in offered), None)

    def handshake(self, query: Mapping[str, str], headers: Mapping[str, str],
                  settings: Any) -> DeepgramWire:
        params = parse_listen(query, live=True)
        return DeepgramWire(params, decoder_for(params, settings.max_session_seconds))


class DeepgramWire:
    def __init__(self, params: ListenParams, decoder: Any) -> None:
        self.params = params
        self.options = params.options(live=True)
        self.decoder = decoder
        self.request_id = str(uuid.uuid4())
        self.accept_headers = {"dg-request-id": self.request_id}
        self.log_context = {"encoding": params.encoding, "sample_rate": params.sample_rate,
                            "channels": params.channels, "language": params.language,
                            "model": params.model, "request_id": self.request_id}
        self._created = now_iso()
        self._sha256 = hashlib.sha256()
        self._first_audio = True
        self._model = ModelInfo("sttd", "unknown", params.model)
        self._cursor_ms = 0  # end of the last result: where an empty Finalize result sits
        self._configuring: tuple[list[str] | None, dict[str, bool]] | None = None
        self._channel = [0, 1]

    # -- client messages -------------------------------------------------------------------

    def parse(self, frame: bytes | str) -> Inbound:
        if isinstance(frame, bytes):
            if not frame:
                return Command.EOS  # Deepgram's older close signal: an empty binary frame
            self._sha256.update(frame)
            if self._first_audio:
                self._first_audio = False
                if self.params.raw_codec:
                    frame = _skip_wav_header(frame)
            return AudioIn(frame)
        if len(frame) > MAX_CONTROL_CHARS:
            raise _rejected("control message too large")
        try:
            msg = json.loads(frame)
        except (ValueError, RecursionError):
            raise _rejected("text frames must be JSON control messages; send audio as "
                            "binary frames") from None
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind == "KeepAlive":
            return None
        if kind == "Finalize":
            return Command.COMMIT
        if kind == "CloseStream":
            return Command.EOS
        if kind == "Configure":
            return self._configure(msg)
        raise _rejected(f"unknown control message type {str(kind)[:40]!r}; expected "
                        "KeepAlive, Finalize, CloseStream or Configure")

    def _configure(self, msg: dict) -> Configure:
        """Mid-stream ``keyterms`` (they replace the list, the ``keyterm`` query included) and
        ``features`` (``punctuate``, ``smart_format``); applied in order with the audio and
        answered with ``ConfigureSuccess`` once they are."""
        if self._configuring:
            raise _rejected("another Configure is still awaiting its response",
                            "CONFIGURE_ALREADY_PENDING")
        terms, features = msg.get("keyterms"), msg.get("features") or {}
        if terms is not None and (not isinstance(terms, list) or not all(
                isinstance(t, str) and 0 < len(t) <= MAX_HOTWORD_CHARS for t in terms)):
            raise _rejected("keyterms must be a list of short strings",
                            "CONFIGURE_INTERNAL_ERROR")
        if terms is not None and len(terms) > MAX_HOTWORDS:
            raise _rejected(f"at most {MAX_HOTWORDS} keyterms", "CONFIGURE_KEYTERM_LIMIT_EXCEEDED")
        if not isinstance(features, dict) or not all(
                isinstance(v, bool) for v in features.values()):
            raise _rejected("features must map feature names to booleans",
                            "CONFIGURE_INTERNAL_ERROR")
        self._configuring = (terms, features)
        options = self.options
        if terms is not None:
            options = options.merge(hotwords=tuple(dict.fromkeys(t.strip() for t in terms)))
        self.options = options
        return Configure(options)

    # -- server messages -------------------------------------------------------------------

    def encode(self, event: Event) -> Outbound:
        match event:
            case Partial():
                return (self._results(event.start_ms, event.end_ms, {
                    "transcript": event.text if self.params.formatted else plain(event.text),
                    "confidence": 0.0, "words": []}, is_final=False),)
            case Final():
                return (self._final(event),)
            case Committed():
                if event.segment_seq is not None:
                    return NOTHING  # its final went out just before, from_finalize
                start = self._cursor_ms
                return (self._results(start, start + event.audio_ms, {
                    "transcript": "", "confidence": 0.0, "words": []}, is_final=True,
                    from_finalize=True),)
            case SpeechStarted():
                if not self.params.vad_events:
                    return NOTHING
                return (self._msg("SpeechStarted", channel=self._channel,
                                  timestamp=seconds(event.start_ms)),)
            case EndOfTurn():
                return (self._msg("UtteranceEnd", channel=self._channel,
                                  last_word_end=seconds(event.last_word_end_ms)),)
            case Ready():
                self._model = ModelInfo(event.backend, event.model, self.params.model)
                return NOTHING
            case SessionEnd():
                return (self._msg("Metadata", **self._model.metadata(
                    self.request_id, created=self._created, sha256=self._sha256.hexdigest(),
                    duration_s=seconds(event.audio_ms), params=self.params)), Close(1000))
            case InputRejected():
                if (event.detail or "").startswith("CONFIGURE_"):
                    if event.detail != "CONFIGURE_ALREADY_PENDING":
                        self._configuring = None
                    return (self._msg("ConfigureFailure", request_id=self.request_id,
                                      code=event.detail, description=event.message),)
                if self._configuring is not None and event.detail is None:
                    # the backend refused the new keyterms (the job names no detail)
                    self._configuring = None
                    return (self._msg("ConfigureFailure", request_id=self.request_id,
                                      code="CONFIGURE_INTERNAL_ERROR",
                                      description=event.message),)
                return (self._error(event.detail or event.code.value, event.message),)
            case AudioDropped():
                return (self._error("audio_dropped", f"server overloaded: {event.dropped_ms} "
                                    f"ms of audio were dropped ({event.total_dropped_ms} ms "
                                    "in this session)"),)
            case SessionError():
                return (self._error(event.code.value, event.message), close_for(event))
            case Configured():
                terms, features = self._configuring or (None, {})
                self._configuring = None
                known = {k: v for k, v in features.items() if k in ("punctuate", "smart_format")}
                if known:
                    self.params = self.params.model_copy(update=known)
                answer: dict[str, Any] = {"request_id": self.request_id}
                if terms is not None:
                    answer["keyterms"] = list(self.options.hotwords)
                return (self._msg("ConfigureSuccess", **answer),)
            case SpeechStopped() | Cleared() | SegmentFailed() | Pong() | PostprocessFailed():
                return NOTHING  # not part of this protocol (an Error follows a failure)
        raise TypeError(f"cannot encode {event!r}")

    def _final(self, f: Final) -> str:
        return self._results(
            f.start_ms, f.end_ms, alternative(f, self.params.formatted), is_final=True,
            speech_final=f.reason in (FinalReason.ENDPOINT, FinalReason.EOS),
            from_finalize=f.reason is FinalReason.COMMIT)

    def _results(self, start_ms: int, end_ms: int, alt: dict[str, Any], *, is_final: bool,
                 speech_final: bool = False, from_finalize: bool = False) -> str:
        if is_final:
            self._cursor_ms = max(self._cursor_ms, end_ms)
        return self._msg(
            "Results", channel_index=self._channel, duration=seconds(end_ms - start_ms),
            start=seconds(start_ms), is_final=is_final, speech_final=speech_final,
            channel={"alternatives": [alt]},
            metadata={"request_id": self.request_id, "model_info": self._model.info,
                      "model_uuid": self._model.uuid},
            from_finalize=from_finalize)

    def _error(self, code: str, message: str) -> str:
        return self._msg("Error", variant=code, description=message, code=code,
                         message=message)

    @staticmethod
    def _msg(kind: str, **fields: Any) -> str:
        return json.dumps({"type": kind, **fields}, ensure_ascii=False, separators=(",", ":"))


def _rejected(message: str, code: str = "INVALID_MESSAGE") -> ProtocolError:
    """A bad control message: an ``Error`` (or ``ConfigureFailure``), and the stream goes on."""
    return ProtocolError(ErrorCode.BAD_REQUEST, message, fatal=False, detail=code)


def _skip_wav_header(frame: bytes) -> bytes:
    """Raw audio sent straight from a WAV file starts with its header (the SDK's examples
    do this): drop it up to the ``data`` chunk, when the whole header is in this frame."""
    if len(frame) < 12 or frame[:4] != b"RIFF" or frame[8:12] != b"WAVE":
        return frame
    pos = 12
    while pos + 8 <= len(frame):
        chunk, size = frame[pos:pos + 4], int.from_bytes(frame[pos + 4:pos + 8], "little")
        if chunk == b"data":
            return frame[pos + 8:]
        pos += 8 + size + (size & 1)
    return frame
