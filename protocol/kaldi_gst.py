"""kaldi-gstreamer-server's client protocol on ``/client/ws/speech``, as its ``client.py``,
``dictate.js`` and their forks speak it.

The handshake's ``content-type`` query parameter is GStreamer caps (``audio/x-raw,
layout=(string)interleaved, rate=(int)16000, format=(string)S16LE, channels=(int)1``, the 0.10
``audio/x-raw-int; rate=16000``, μ-law and A-law) or a container type, or empty: the container
is sniffed. Binary frames are audio; ``EOS`` (text or binary) ends the stream. Every message
is JSON with a ``status``: 0 with a ``result`` for each partial and final of a segment
(``segment`` counted from 0; the final with n-best ``hypotheses``, ``word-alignment``,
``segment-start``, ``segment-length``, ``total-length``), non-zero for an error, after which the
socket is closed. The server always closes after the last final following ``EOS``.

KGS clients cannot read a refused upgrade (``client.py`` crashes on anything but 101), so a
refusal is accepted first and sent as ``{"status": 9, "message": …}`` (server full, draining,
not ready) or ``{"status": 5, …}`` (bad request, no key), then closed.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from backends.base import Alternative, Word
from protocol.adaptation import AdaptationError, apply_state, decode_state, encode_state
from protocol.audio import RawDecoder
from protocol.common import (
    BEARER,
    NOTHING,
    QUERY_TOKEN,
    AudioIn,
    Close,
    Command,
    Configure,
    Inbound,
    Outbound,
    ProtocolError,
    close_for,
)
from protocol.container import ContainerDecoder
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

# kaldigstserver/common.py
STATUS_SUCCESS = 0
STATUS_NO_SPEECH = 1
STATUS_ABORTED = 2
STATUS_NOT_ALLOWED = 5
STATUS_NOT_AVAILABLE = 9
MAX_CONTROL_CHARS = 64 * 1024  # an adaptation state may come as text
_EOS = "EOS"
_CONTAINERS = {"audio/ogg", "audio/x-ogg", "application/ogg", "audio/webm", "video/webm",
               "audio/x-wav", "audio/wav", "audio/wave", "audio/mpeg", "audio/mp3",
               "audio/x-flac", "audio/flac", "audio/mp4", "audio/x-m4a", "audio/x-matroska"}
_RAW_FORMATS = {"S16LE": "pcm_s16le", "F32LE": "pcm_f32le"}
_FIELD = re.compile(r"\s*([A-Za-z][\w-]*)\s*=\s*(?:\((\w+)\))?\s*(\"[^\"]*\"|[^,;]*?)\s*")
_ERROR_STATUS = {
    ErrorCode.IDLE_TIMEOUT: STATUS_NO_SPEECH,
    ErrorCode.SHUTTING_DOWN: STATUS_NOT_AVAILABLE,
    ErrorCode.AUDIO_QUEUE_OVERFLOW: STATUS_NOT_AVAILABLE,
    ErrorCode.BACKEND_ERROR: STATUS_ABORTED,
    ErrorCode.INTERNAL_ERROR: STATUS_ABORTED,
    ErrorCode.SLOW_CONSUMER: STATUS_ABORTED,
}


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """What the ``content-type`` caps say: a raw codec with rate and channels, or a
    container (``codec`` None) for FFmpeg to sniff."""

    codec: str | None = None
    rate: int = 16000
    channels: int = 1

    def decoder(self, max_seconds: float):
        if self.codec is None:
            return ContainerDecoder("auto", max_seconds=max_seconds)
        return RawDecoder(self.codec, self.rate, self.channels)


def parse_caps(caps: str) -> AudioFormat:
    """GStreamer caps (1.0 or 0.10, ``,`` or ``;`` separated) or a container media type;
    empty: sniff. Raises ProtocolError naming what is wrong."""
    caps = caps.strip()
    if not caps:
        return AudioFormat()
    media, *tail = re.split(r"[,;]", caps, maxsplit=1)
    media, rest = media.strip().lower(), tail[0] if tail else ""
    fields: dict[str, str] = {}
    for part in filter(str.strip, re.split(r"[,;]", rest)):
        m = _FIELD.fullmatch(part)
        if m is None:
            raise _bad_caps(caps, f"{part.strip()!r} is not key=value")
        fields[m.group(1).lower()] = m.group(3).strip('"')
    if media in _CONTAINERS:
        return AudioFormat()
    rate = _int_field(fields, "rate", 8000 if media in ("audio/x-mulaw", "audio/x-alaw")
                      else 16000, caps)
    channels = _int_field(fields, "channels", 1, caps)
    if not MIN_RATE <= rate <= 48000 or not 1 <= channels <= 8:
        raise _bad_caps(caps, "rate must be 8000-48000 and channels 1-8")
    if media == "audio/x-raw":
        fmt = fields.get("format", "S16LE")
        if fmt not in _RAW_FORMATS:
            raise _bad_caps(caps, f"format {fmt} is not supported: use S16LE or F32LE")
        if fields.get("layout", "interleaved") != "interleaved":
            raise _bad_caps(caps, "only layout=interleaved is supported")
        return AudioFormat(_RAW_FORMATS[fmt], rate, channels)
    if media == "audio/x-raw-int":  # GStreamer 0.10, still what KGS's HTTP examples send
        if (fields.get("width", "16"), fields.get("signed", "true").lower(),
                fields.get("endianness", "1234")) != ("16", "true", "1234"):
            raise _bad_caps(caps, "only 16-bit signed little-endian integers are supported")
        return AudioFormat("pcm_s16le", rate, channels)
    if media == "audio/x-raw-float":
        if fields.get("width", "32") != "32" or fields.get("endianness", "1234") != "1234":
            raise _bad_caps(caps, "only 32-bit little-endian floats are supported")
        return AudioFormat("pcm_f32le", rate, channels)
    if media == "audio/x-mulaw":
        return AudioFormat("mulaw", rate, channels)
    if media == "audio/x-alaw":
        return AudioFormat("alaw", rate, channels)
    raise _bad_caps(caps, f"media type {media[:40]!r} is not audio sttd decodes")


def _int_field(fields: dict[str, str], name: str, default: int, caps: str) -> int:
    value = fields.get(name)
    if value is None:
        return default
    if not value.isdigit():
        raise _bad_caps(caps, f"{name} must be an integer")
    return int(value)


def _bad_caps(caps: str, why: str) -> ProtocolError:
    return ProtocolError(ErrorCode.UNSUPPORTED_AUDIO,
                         f"content-type {caps[:120]!r}: {why}")


def full_result(f: Final, segment: int, request_id: str) -> dict[str, Any]:
    """A final as KGS's "full result": what its clients read and what its full
    post-processors (``STT_POSTPROCESSOR``) rewrite."""
    best: dict[str, Any] = {"transcript": f.text}
    if f.confidence is not None:
        best["confidence"] = round(f.confidence, 4)
    if f.words:
        best["word-alignment"] = [
            {"word": w.word.strip(), "start": round((w.start_ms - f.start_ms) / 1000, 3),
             "length": round((w.end_ms - w.start_ms) / 1000, 3),
             **({"confidence": round(w.confidence, 4)} if w.confidence is not None else {})}
            for w in f.words]
    hypotheses = [best]
    if f.alternatives:
        best["likelihood"] = f.alternatives[0].score
        hypotheses += [{"transcript": a.text, "likelihood": a.score}
                       for a in f.alternatives[1:]]
    return {"status": STATUS_SUCCESS, "segment": segment,
            "result": {"hypotheses": hypotheses, "final": True}, "id": request_id,
            "segment-start": round(f.start_ms / 1000, 3),
            "segment-length": round((f.end_ms - f.start_ms) / 1000, 3),
            "total-length": round(f.end_ms / 1000, 3)}


def from_full_result(f: Final, result: Any) -> Final:
    """The final a post-processor's rewritten full result describes (its text, words and
    alternatives; times stay the original's where the words are unchanged in number).
    Raises ValueError when the result is not a KGS full result."""
    try:
        hypotheses = result["result"]["hypotheses"]
        best = hypotheses[0]
        text = best["transcript"]
    except (KeyError, IndexError, TypeError):
        raise ValueError("not a full result with result.hypotheses[0].transcript") from None
    if not isinstance(text, str):
        raise ValueError("transcript is not a string")
    words = f.words
    alignment = best.get("word-alignment")
    if isinstance(alignment, list) and alignment != full_result(f, 0, "")["result"][
            "hypotheses"][0].get("word-alignment"):
        try:
            words = tuple(Word(str(a["word"]), f.start_ms + round(float(a["start"]) * 1000),
                               f.start_ms + round((float(a["start"]) + float(a["length"]))
                                                  * 1000), a.get("confidence"))
                          for a in alignment)
        except (KeyError, TypeError, ValueError):
            raise ValueError("word-alignment entries need word, start and length") from None
    alternatives = f.alternatives
    if len(hypotheses) > 1 or f.alternatives:
        alternatives = tuple(Alternative(str(h.get("transcript", "")),
                                         float(h.get("likelihood", 0.0)))
                             for h in hypotheses if isinstance(h, dict))
    confidence = best.get("confidence", f.confidence)
    return replace(f, text=text.strip(), words=words, alternatives=alternatives,
                   confidence=confidence if isinstance(confidence, int | float) else None)


def kgs_message(status: int, message: str, **fields: Any) -> str:
    return json.dumps({"status": status, "message": message, **fields}, ensure_ascii=False)


def refusal_status(http_status: int) -> int:
    return STATUS_NOT_AVAILABLE if http_status in (429, 503) else STATUS_NOT_ALLOWED


class KaldiGstProtocol:
    """``/client/ws/speech``. KGS has no authentication; with ``STT_AUTH_TOKENS`` set, the
    key goes in ``?token=`` (its clients cannot set headers) or ``Authorization: Bearer``."""

    name = "kaldi_gst"
    credentials = (QUERY_TOKEN, BEARER)
    auth_challenge = "Bearer"
    capacity_status = 503

    @staticmethod
    def error_body(status: int, code: str, message: str, param: str | None = None) -> dict:
        return {"status": refusal_status(status), "message": message}

    def refuse_after_accept(self, status: int, code: str, message: str) -> str:
        return kgs_message(refusal_status(status), message, id=str(uuid.uuid4()))

    def subprotocol(self, offered: list[str]) -> str | None:
        return None

    def handshake(self, query: Mapping[str, str], headers: Mapping[str, str],
                  settings: Any) -> KaldiGstWire:
        fmt = parse_caps(query.get("content-type", ""))
        n_best = query.get("n_best", "1")
        if not n_best.isdigit() or not 1 <= int(n_best) <= 10:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "n_best must be an integer from 1 to 10")
        return KaldiGstWire(fmt, fmt.decoder(settings.max_session_seconds), int(n_best),
                            user_id=query.get("user-id", ""),
                            content_id=query.get("content-id", ""))


class KaldiGstWire:
    def __init__(self, fmt: AudioFormat, decoder: Any, n_best: int, *, user_id: str = "",
                 content_id: str = "") -> None:
        self.options = RecognitionOptions(n_best=n_best)
        self.decoder = decoder
        self.request_id = str(uuid.uuid4())
        self.log_context = {"codec": fmt.codec or "auto", "sample_rate": fmt.rate,
                            "channels": fmt.channels, "user_id": user_id[:64],
                            "content_id": content_id[:64], "request_id": self.request_id}
        self._segment = 0  # KGS counts segments from 0, one per final sent
        self._texts: list[str] = []  # what was said: the next session's context
        self._language: str | None = None
        self._open = False  # partials of the current segment went out: a final must follow

    # -- client messages -----------------------------------------------------------------

    def parse(self, frame: bytes | str) -> Inbound:
        if isinstance(frame, bytes):
            return Command.EOS if frame == b"EOS" else AudioIn(frame)
        if frame == _EOS:
            return Command.EOS
        if len(frame) > MAX_CONTROL_CHARS:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "text message too large")
        try:
            msg = json.loads(frame)
        except (ValueError, RecursionError):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "text messages must be EOS or JSON; "
                                "send audio as binary frames") from None
        if isinstance(msg, dict) and "adaptation_state" in msg:
            try:
                carried = decode_state(msg["adaptation_state"])
            except AdaptationError as exc:  # told (status 5); the session goes on without
                raise ProtocolError(ErrorCode.BAD_REQUEST, str(exc), fatal=False) from None
            self.options = apply_state(self.options, carried)
            return Configure(self.options)
        raise ProtocolError(ErrorCode.BAD_REQUEST, "unknown text message: expected EOS or "
                            '{"adaptation_state": …}')

    # -- server messages -----------------------------------------------------------------

    def encode(self, event: Event) -> Outbound:
        match event:
            case Partial():
                self._open = True
                return (self._result([{"transcript": event.text}], final=False),)
            case Final():
                if event.text:
                    self._texts.append(event.text)
                    self._language = event.language or self._language
                return self._final(event)
            case SessionEnd():  # the state for the next session, then the close
                state = encode_state(self.options, self._texts, self._language,
                                     self.request_id)
                return (self._msg(STATUS_SUCCESS, adaptation_state=state), Close(1000))
            case SessionError():
                status = _ERROR_STATUS.get(event.code, STATUS_NOT_ALLOWED)
                return (self._msg(status, message=event.message), close_for(event))
            case InputRejected():
                return (self._msg(STATUS_NOT_ALLOWED, message=event.message),)
            case AudioDropped():
                return (self._msg(STATUS_SUCCESS, message=f"server overloaded: "
                                  f"{event.dropped_ms} ms of audio were dropped"),)
            case (Ready() | SpeechStarted() | SpeechStopped() | Committed() | Cleared()
                  | Configured() | SegmentFailed() | Pong() | EndOfTurn()
                  | PostprocessFailed()):
                return NOTHING
        raise TypeError(f"cannot encode {event!r}")

    def _final(self, f: Final) -> Outbound:
        if not f.text and not self._open:
            return NOTHING  # silence: KGS sends no segment for it
        self._open = False
        result = full_result(f, self._segment, self.request_id)
        self._segment += 1
        return (json.dumps(result, ensure_ascii=False),)

    def _result(self, hypotheses: list[dict], *, final: bool, **extra: Any) -> str:
        return json.dumps({"status": STATUS_SUCCESS, "segment": self._segment,
                           "result": {"hypotheses": hypotheses, "final": final},
                           "id": self.request_id, **extra}, ensure_ascii=False)

    def _msg(self, status: int, **fields: Any) -> str:
        return json.dumps({"status": status, "id": self.request_id, **fields},
                          ensure_ascii=False)
