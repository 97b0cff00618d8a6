"""sttd's native protocol v1 on ``/v1/stt/ws`` (the realtime-stt-ws lineage).

Query parameters are validated here; client text frames are parsed into commands; internal
events are encoded into JSON messages, each with ``type``, ``call_id`` and a per-session ``seq``.
See docs/protocol.md.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from backends.base import Word
from protocol.adaptation import KIND, AdaptationError, apply_state, decode_state, encode_state
from protocol.audio import RAW_CODECS, RawDecoder
from protocol.common import (
    BEARER,
    NOTHING,
    QUERY_TOKEN,
    AudioIn,
    Close,
    Command,
    Inbound,
    Outbound,
    ProtocolError,
    close_for,
    refusal_body,
)
from protocol.container import ContainerDecoder
from protocol.fields import Hotwords, Language, describe
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


class NativeParams(BaseModel):
    """Handshake query parameters. Unknown parameters are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    call_id: str = Field(min_length=1, max_length=128)
    codec: Literal["pcm_s16le", "pcm_f32le", "mulaw", "alaw",
                   "auto", "ogg", "webm", "mp3", "flac", "wav"] = "pcm_s16le"
    sample_rate: int | None = Field(
        None, ge=MIN_RATE, le=48000, description="Raw codecs only (required there)."
    )
    channels: int = Field(1, ge=1, le=8, description="Raw codecs: interleaved, downmixed.")
    frame_ms: int = Field(20, ge=10, le=1000, description="Client's frame size; a hint.")
    partial_ms: int | None = Field(None, ge=100, le=10000)
    language: Language = "auto"
    hotwords: Hotwords = ()
    n_best: int = Field(1, ge=1, le=10, description="Alternatives in each final.")
    vad: Literal["energy", "silero"] | None = None
    vad_threshold: int | None = Field(None, ge=0, le=32767)
    vad_silence_ms: int | None = Field(None, ge=100, le=10000)
    max_segment_ms: int | None = Field(None, ge=1000, le=120000)
    end_of_turn: bool = Field(False, description="Send end_of_turn events (the server's "
                              "turn settings unless the turn_* parameters are given).")
    turn_silence_ms: int | None = Field(None, ge=100, le=10000)
    turn_min_silence_ms: int | None = Field(None, ge=100, le=10000)
    turn_max_silence_ms: int | None = Field(None, ge=100, le=10000)
    numerals: bool = Field(False, description="Numbers as digits ('seventy two' → '72').")
    adaptation_state: str | None = Field(
        None, max_length=64 * 1024, description="The value of an adaptation state a previous "
        "session sent (string+gzip+base64): its language, hotwords and context carry over.")
    adaptation: bool = Field(False, description="Send this session's adaptation state at "
                             "the end (always, when adaptation_state was given).")

    @property
    def is_raw(self) -> bool:
        return self.codec in RAW_CODECS

    @property
    def turns(self) -> bool:
        return self.end_of_turn or any(v is not None for v in (
            self.turn_silence_ms, self.turn_min_silence_ms, self.turn_max_silence_ms))

    @model_validator(mode="after")
    def _raw_needs_rate(self) -> NativeParams:
        if self.is_raw and self.sample_rate is None:
            raise ValueError(f"sample_rate is required for codec {self.codec}")
        return self


def parse_params(query: Mapping[str, str]) -> NativeParams:
    try:
        return NativeParams.model_validate(dict(query))
    except ValidationError as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, describe(exc)) from None


def parse_text(text: str) -> Command:
    """A client text frame: ``EOS`` or a JSON object with ``type`` commit|eos|ping."""
    if text == "EOS":
        return Command.EOS
    if len(text) > MAX_CONTROL_CHARS:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "control message too large")
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: "[[[[…" nested past the C stack
        raise ProtocolError(ErrorCode.BAD_REQUEST, "control message is not valid JSON") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, 'control message needs a string "type"')
    try:
        return Command(msg["type"])
    except ValueError:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"unknown message type {msg['type'][:40]!r}; expected commit, eos or ping",
        ) from None


class NativeProtocol:
    """``/v1/stt/ws``: refused with an HTTP status before the upgrade; ``Authorization:
    Bearer`` or ``?token=``."""

    name = "native"
    credentials = (BEARER, QUERY_TOKEN)
    auth_challenge = "Bearer"
    capacity_status = 503
    error_body = staticmethod(refusal_body)

    def subprotocol(self, offered: list[str]) -> str | None:
        return None

    def handshake(self, query: Mapping[str, str], headers: Mapping[str, str],
                  settings: Any) -> NativeWire:
        return NativeWire(parse_params(query), settings.max_session_seconds, settings)


class NativeWire:
    """One native session: binary frames are audio in the handshake's codec, text frames
    are commands; every event is one JSON message, and the session's end closes."""

    def __init__(self, params: NativeParams, max_seconds: float, settings: Any = None) -> None:
        self.params = params
        self.options = RecognitionOptions(
            language=params.language, hotwords=params.hotwords, n_best=params.n_best,
            vad=params.vad, vad_threshold=params.vad_threshold,
            vad_silence_ms=params.vad_silence_ms, max_segment_ms=params.max_segment_ms,
            partial_ms=params.partial_ms, numerals=params.numerals,
        )
        if params.turns:
            self.options = self.options.merge(**_turn_options(params, settings))
        if params.adaptation_state is not None:
            try:
                carried = decode_state({"type": KIND, "value": params.adaptation_state})
            except AdaptationError as exc:
                raise ProtocolError(ErrorCode.BAD_REQUEST, str(exc)) from None
            self.options = apply_state(self.options, carried)
        self._adapting = params.adaptation or params.adaptation_state is not None
        self._texts: list[str] = []
        self._language: str | None = None
        self.log_context = {"call_id": params.call_id, "codec": params.codec,
                            "sample_rate": params.sample_rate, "channels": params.channels,
                            "language": params.language}
        if params.is_raw:
            self.decoder = RawDecoder(params.codec, params.sample_rate, params.channels)
        else:
            self.decoder = ContainerDecoder(params.codec, max_seconds=max_seconds)
        self._encoder = NativeEncoder(params.call_id)

    def parse(self, frame: bytes | str) -> Inbound:
        if isinstance(frame, bytes):
            return AudioIn(frame)
        return parse_text(frame)

    def encode(self, event: Event) -> Outbound:
        if isinstance(event, Final) and event.text and self._adapting:
            self._texts.append(event.text)
            self._language = event.language or self._language
        if isinstance(event, SessionEnd):
            if not self._adapting:
                return (Close(1000),)
            state = encode_state(self.options, self._texts, self._language,
                                 self.params.call_id)
            return (self._encoder.message("adaptation_state", adaptation_state=state),
                    Close(1000))
        text = self._encoder.encode(event)
        if isinstance(event, SessionError):
            return (text, close_for(event))
        return NOTHING if text is None else (text,)


def _turn_options(params: NativeParams, settings: Any) -> dict[str, int]:
    """The turn silences asked for, the server's for the rest; given only a fixed
    ``turn_silence_ms``, turns end after that silence whatever the words (no cue)."""
    fixed = params.turn_silence_ms is not None and params.turn_min_silence_ms is None \
        and params.turn_max_silence_ms is None
    silence = params.turn_silence_ms or settings.turn_silence_ms
    if fixed:
        return {"turn_silence_ms": silence}
    return {"turn_silence_ms": silence,
            "turn_min_silence_ms": params.turn_min_silence_ms or settings.turn_min_silence_ms,
            "turn_max_silence_ms": params.turn_max_silence_ms or settings.turn_max_silence_ms}


class NativeEncoder:
    """Encodes one session's events; owns its ``seq`` counter."""

    def __init__(self, call_id: str) -> None:
        self._call_id = call_id
        self._seq = 0

    def encode(self, event: Event) -> str | None:
        body = _body(event)
        return None if body is None else self.message(body.pop("type"), **body)

    def message(self, kind: str, **body: Any) -> str:
        self._seq += 1
        msg = {"type": kind, "call_id": self._call_id, "seq": self._seq,
               "created_at": round(time.time(), 3), **body}
        return json.dumps(msg, ensure_ascii=False, separators=(",", ":"))


def _body(event: Event) -> dict[str, Any] | None:
    match event:
        case Partial():
            return {"type": "partial", "segment_seq": event.segment_seq, "text": event.text,
                    "stable_text": event.stable_text, "final": False,
                    "start_ms": event.start_ms, "end_ms": event.end_ms}
        case EndOfTurn():
            return {"type": "end_of_turn", "segments": list(event.segments),
                    "last_word_end_ms": event.last_word_end_ms,
                    "silence_ms": event.silence_ms, "cue": event.cue,
                    "required_silence_ms": event.required_silence_ms,
                    "decided_at_ms": event.decided_at_ms}
        case Final():
            return _final(event)
        case SpeechStarted():
            return {"type": "speech_started", "segment_seq": event.segment_seq,
                    "start_ms": event.start_ms}
        case Committed():
            return {"type": "committed", "segment_seq": event.segment_seq}
        case AudioDropped():
            return {"type": "warning", "code": "audio_dropped",
                    "message": "server overloaded: audio was dropped",
                    "dropped_ms": event.dropped_ms, "total_dropped_ms": event.total_dropped_ms}
        case PostprocessFailed():
            return {"type": "warning", "code": "postprocessor_failed",
                    "message": event.message, "segment_seq": event.segment_seq}
        case Ready():
            return {"type": "ready", "session_id": event.session_id,
                    "sample_rate": event.sample_rate, "backend": event.backend,
                    "model": event.model}
        case Pong():
            return {"type": "pong"}
        case SessionError():
            return {"type": "error", "code": event.code.value, "message": event.message}
        case SessionEnd() | SpeechStopped() | Cleared() | Configured() | SegmentFailed():
            return None  # not part of this protocol (its clients see the final or error)
        case InputRejected():
            return {"type": "error", "code": event.code.value, "message": event.message}
    raise TypeError(f"cannot encode {event!r}")


def _final(f: Final) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "final", "segment_seq": f.segment_seq, "text": f.text, "final": True,
        "start_ms": f.start_ms, "end_ms": f.end_ms, "reason": f.reason.value,
        "words": [_word(w) for w in f.words], "confidence": f.confidence,
        "first_token_ms": f.first_token_ms, "latency_ms": f.latency_ms,
        "segment_duration_ms": f.segment_duration_ms,
    }
    if f.language:
        body["language"] = f.language
    if f.alternatives:
        body["alternatives"] = [{"text": a.text, "score": a.score} for a in f.alternatives]
    return body


def _word(w: Word) -> dict[str, Any]:
    return {"word": w.word, "start_ms": w.start_ms, "end_ms": w.end_ms,
            "confidence": w.confidence}
