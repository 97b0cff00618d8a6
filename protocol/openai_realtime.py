"""OpenAI's Realtime API in transcription mode on ``/v1/realtime`` (GA vocabulary; the beta's
``transcription_session.*`` accepted too), as the ``openai`` SDK, LiveKit and Pipecat speak it.

Every client event is a JSON text frame. Audio comes base64-encoded in
``input_audio_buffer.append`` (PCM16 at 24 kHz by default, or G.711 at 8 kHz), is resampled to
the backend rate, and meets the same backpressure as binary audio. ``session.update`` merges
into the session (only the fields present change; ``null`` clears) and takes effect in order
with the audio around it; ``session.updated`` echoes the whole session once it has. Errors in
client events are recoverable (an ``error`` event, the session stays open), as OpenAI's are.

With ``server_vad``, one item per segment: the endpointer opens and closes items
(``speech_started``, ``speech_stopped`` and an automatic ``committed``). With ``semantic_vad``,
one item per turn: it opens with the turn's first speech and closes at sttd's end of turn
(``session.turns``: the silence it waits for depends on how the words end, and ``eagerness``
sets how long), however many segments the turn holds. With ``turn_detection: null`` only
``input_audio_buffer.commit`` closes an item. Transcription deltas are append-only
(``protocol.deltas``; a backend's settled words go out as soon as it settles them): their
concatenation is the item's ``completed`` transcript.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
import uuid
from collections import deque
from collections.abc import Mapping
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any

from backends.base import Word
from protocol.audio import RawDecoder
from protocol.common import (
    BEARER,
    NOTHING,
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
from protocol.deltas import AppendOnlyText
from protocol.fields import check_language
from protocol.openai_batch import LANGUAGE_NAMES, openai_error_body, token_usage
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

BROWSER_KEY_PREFIX = "openai-insecure-api-key."
MIN_COMMIT_MS = 100  # OpenAI refuses to commit less ("input_audio_buffer_commit_empty")
MAX_EVENT_CHARS = 16 << 20  # OpenAI allows 15 MiB of audio per append
LOGPROBS = "item.input_audio_transcription.logprobs"
# semantic_vad's eagerness → the silences that end a turn (session.turns): after a finished
# sentence, after words that give no cue, after words that trail off (bench/turns.py).
EAGERNESS_TURN_MS = {"low": (800, 2000, 3000), "medium": (400, 1300, 2000),
                     "auto": (400, 1300, 2000), "high": (300, 800, 1500)}
_CODECS = {"audio/pcm": "pcm_s16le", "audio/pcmu": "mulaw", "audio/pcma": "alaw"}
_BETA_FORMATS = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}


def _bad(message: str, *, param: str | None = None, code: str = "invalid_value",
         event_id: str | None = None) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_REQUEST, message, fatal=False, detail=code,
                         event_id=event_id, param=param)


class OpenAIRealtimeProtocol:
    """Refused with an HTTP status and OpenAI's error object before the upgrade;
    ``Authorization: Bearer`` or the browser subprotocol ``openai-insecure-api-key.<key>``."""

    name = "openai_realtime"
    credentials = (BEARER, Credential("subprotocol", BROWSER_KEY_PREFIX))
    auth_challenge = "Bearer"
    capacity_status = 429  # the SDK and the frameworks back off and retry on 429
    error_body = staticmethod(openai_error_body)

    def subprotocol(self, offered: list[str]) -> str | None:
        return "realtime" if "realtime" in offered else None

    def handshake(self, query: Mapping[str, str], headers: Mapping[str, str],
                  settings: Any) -> OpenAIRealtimeWire:
        intent = query.get("intent", "transcription")
        if intent != "transcription":
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"intent={intent[:40]} is not served: "
                                "sttd serves transcription sessions only (intent=transcription)")
        beta = headers.get("openai-beta", "").startswith("realtime")
        return OpenAIRealtimeWire(query.get("model"), settings, beta=beta)


class OpenAIRealtimeWire:
    def __init__(self, model: str | None, settings: Any, *, beta: bool = False) -> None:
        self._settings = settings
        self._beta = beta  # answer in the beta's transcription_session.* vocabulary
        self._id = uuid.uuid4().hex[:20]
        self.session: dict[str, Any] = {
            "type": "transcription", "id": f"sess_{self._id}",
            "object": "realtime.transcription_session", "expires_at": 0, "include": None,
            "audio": {"input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": {"model": model or "whisper-1", "language": None,
                                  "prompt": ""},
                "noise_reduction": None,
                "turn_detection": {
                    "type": "server_vad", "threshold": 0.5,
                    "prefix_padding_ms": settings.vad_preroll_ms,
                    "silence_duration_ms": settings.vad_silence_ms,
                },
            }},
        }
        self.options = self._options(self.session)
        self.decoder = RawDecoder("pcm_s16le", 24000)
        self.log_context = {"model": model, "intent": "transcription", "beta": beta}
        self._events = 0
        self._updates: deque[tuple[dict, bool]] = deque()  # applied in order: (session, beta)
        self._commits: deque[str | None] = deque()  # event_ids of commits not yet answered
        self._items: dict[int, str] = {}  # segment_seq → item_id
        self._texts: dict[int, AppendOnlyText] = {}
        self._committed: set[int] = set()
        self._last_item: str | None = None  # previous_item_id of the next committed item
        self._turn: _Turn | None = None  # semantic_vad: the open turn's item
        self._items_made = 0

    # -- client events -------------------------------------------------------------------

    def parse(self, frame: bytes | str) -> Inbound:
        if isinstance(frame, bytes):
            raise _bad("binary frames are not part of this protocol: send audio as base64 "
                       "in input_audio_buffer.append", code="invalid_event")
        if len(frame) > MAX_EVENT_CHARS:
            raise _bad("client event too large", code="invalid_event")
        try:
            event = json.loads(frame)
        except (ValueError, RecursionError):
            raise _bad("client event is not valid JSON", code="invalid_json") from None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise _bad('client event needs a string "type"', param="type",
                       code="invalid_event")
        kind = event["type"]
        event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        try:
            if kind == "input_audio_buffer.append":
                return AudioIn(self._audio(event))
            if kind == "input_audio_buffer.commit":
                self._commits.append(event_id)
                return Command.COMMIT
            if kind == "input_audio_buffer.clear":
                return Command.CLEAR
            if kind == "session.update":
                return self._update(event.get("session"), beta=False)
            if kind == "transcription_session.update":
                return self._update(_from_beta(event.get("session")), beta=True)
        except ProtocolError as exc:
            exc.event_id = event_id
            raise
        raise _bad(f"event type {kind[:60]!r} is not supported: sttd serves transcription "
                   "sessions (session.update, input_audio_buffer.append|commit|clear)",
                   param="type", code="invalid_event", event_id=event_id)

    def _audio(self, event: dict) -> bytes:
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise _bad("input_audio_buffer.append needs base64 'audio'", param="audio")
        try:
            return base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise _bad("'audio' is not valid base64", param="audio") from None

    def _update(self, patch: Any, *, beta: bool) -> Configure:
        if not isinstance(patch, dict):
            raise _bad("session.update needs a 'session' object", param="session")
        if patch.get("type", "transcription") != "transcription":
            raise _bad("only transcription sessions are served (session.type=transcription)",
                       param="session.type")
        merged = deepcopy(self.session)
        _merge(merged, {k: v for k, v in patch.items() if k not in ("id", "object", "type")})
        audio = patch.get("audio")
        inp = audio.get("input") if isinstance(audio, dict) else None
        turn = inp.get("turn_detection") if isinstance(inp, dict) else None
        old_turn = self.session["audio"]["input"]["turn_detection"]
        if isinstance(turn, dict) and (old_turn or {}).get("type") != turn.get("type"):
            merged["audio"]["input"]["turn_detection"] = turn  # a new kind: not merged
        options = self._options(merged)  # raises on bad values: nothing changes then
        old_format = self.session["audio"]["input"]["format"]
        new_format = merged["audio"]["input"]["format"]
        decoder = None
        if new_format != old_format:
            decoder = RawDecoder(_CODECS[new_format["type"]], _rate(new_format))
        self.session = merged
        self._updates.append((deepcopy(merged), beta))
        return Configure(options, decoder)

    def _options(self, session: dict) -> RecognitionOptions:
        inp = session.get("audio", {}).get("input", {})
        fmt = inp.get("format") or {"type": "audio/pcm", "rate": 24000}
        if not isinstance(fmt, dict) or fmt.get("type") not in _CODECS:
            raise _bad("audio.input.format.type must be audio/pcm, audio/pcmu or audio/pcma",
                       param="session.audio.input.format")
        _rate(fmt)
        inp["format"] = fmt
        transcription = inp.get("transcription") or {}
        language = transcription.get("language") or "auto"
        try:
            language = check_language(language) if isinstance(language, str) else None
        except ValueError:
            language = None
        if language is None:
            raise _bad("transcription.language must be an ISO-639-1 code such as 'en'",
                       param="session.audio.input.transcription.language")
        keywords = transcription.get("keywords") or ()
        if not isinstance(keywords, list | tuple) or not all(
                isinstance(k, str) and 0 < len(k) <= 64 for k in keywords):
            raise _bad("transcription.keywords must be a list of short strings",
                       param="session.audio.input.transcription.keywords")
        include = session.get("include") or []
        if not isinstance(include, list):
            raise _bad("include must be a list", param="session.include")
        turn = inp.get("turn_detection")
        options = RecognitionOptions(language=language, hotwords=tuple(keywords[:100]))
        if turn is None:
            return options.merge(endpointing=False)
        if not isinstance(turn, dict) or turn.get("type") not in ("server_vad", "semantic_vad"):
            raise _bad("turn_detection must be null, server_vad or semantic_vad",
                       param="session.audio.input.turn_detection")
        if turn["type"] == "semantic_vad":
            eagerness = turn.get("eagerness", "auto")
            if eagerness not in EAGERNESS_TURN_MS:
                raise _bad("eagerness must be low, medium, high or auto",
                           param="session.audio.input.turn_detection.eagerness")
            low, middle, high = EAGERNESS_TURN_MS[eagerness]
            return options.merge(turn_silence_ms=middle, turn_min_silence_ms=low,
                                 turn_max_silence_ms=high)
        threshold = _number(turn, "threshold", 0.0, 1.0)
        padding = _number(turn, "prefix_padding_ms", 0, 2000)
        silence = _number(turn, "silence_duration_ms", 100, 10000)
        return options.merge(
            vad_level=threshold, vad_silence_ms=None if silence is None else int(silence),
            preroll_ms=None if padding is None else int(padding))

    # -- server events -------------------------------------------------------------------

    def encode(self, event: Event) -> Outbound:
        if self._semantic:
            frames = self._encode_turn(event)
            if frames is not None:
                return frames
        match event:
            case Partial():
                delta = self._text(event.segment_seq).partial(event.text, event.stable_text)
                return (self._delta(event.segment_seq, delta),) if delta else NOTHING
            case Final():
                return self._final(event)
            case SpeechStarted():
                if not self._server_vad:
                    return NOTHING
                return (self._msg("input_audio_buffer.speech_started",
                                  item_id=self._item(event.segment_seq),
                                  audio_start_ms=event.start_ms),)
            case SpeechStopped():
                frames = []
                if self._server_vad:
                    frames.append(self._msg("input_audio_buffer.speech_stopped",
                                            item_id=self._item(event.segment_seq),
                                            audio_end_ms=event.end_ms))
                return (*frames, *self._commit(event.segment_seq))
            case Committed():
                return self._committed_ack(event)
            case Cleared():
                return (self._msg("input_audio_buffer.cleared"),)
            case Configured():
                session, beta = self._updates.popleft()
                if beta:
                    return (self._msg("transcription_session.updated",
                                      session=_to_beta(session)),)
                return (self._msg("session.updated", session=session),)
            case Ready():
                if self._beta:
                    return (self._msg("transcription_session.created",
                                      session=_to_beta(self.session)),)
                return (self._msg("session.created", session=self.session),)
            case InputRejected():
                return (self._error(event.message, code=event.detail, param=event.param,
                                    event_id=event.event_id),)
            case SegmentFailed():
                return (self._msg(
                    "conversation.item.input_audio_transcription.failed",
                    item_id=self._item(event.segment_seq), content_index=0,
                    error={"type": "server_error", "code": "transcription_failed",
                           "message": event.message, "param": None}),)
            case AudioDropped():
                return (self._error(
                    f"server overloaded: {event.dropped_ms} ms of audio were dropped "
                    f"({event.total_dropped_ms} ms in this session)", code="audio_dropped",
                    kind="server_error"),)
            case SessionError():
                kind = "server_error" if event.code in (
                    ErrorCode.BACKEND_ERROR, ErrorCode.INTERNAL_ERROR,
                    ErrorCode.SHUTTING_DOWN, ErrorCode.AUDIO_QUEUE_OVERFLOW,
                ) else "invalid_request_error"
                return (self._error(event.message, code=event.code.value, kind=kind),
                        close_for(event))
            case SessionEnd():
                return (Close(1000),)
            case Pong() | EndOfTurn() | PostprocessFailed():
                return NOTHING
        raise TypeError(f"cannot encode {event!r}")

    @property
    def _server_vad(self) -> bool:
        return self.session["audio"]["input"]["turn_detection"] is not None

    @property
    def _semantic(self) -> bool:
        turn = self.session["audio"]["input"]["turn_detection"]
        return turn is not None and turn.get("type") == "semantic_vad"

    def _encode_turn(self, event: Event) -> Outbound | None:
        """semantic_vad: the events that make one item of a whole turn; None: as per segment."""
        turn = self._turn
        match event:
            case SpeechStarted():
                if turn is not None:
                    return NOTHING  # the turn's item is open already
                self._turn = _Turn(self._item(None))
                return (self._msg("input_audio_buffer.speech_started", item_id=self._turn.item,
                                  audio_start_ms=event.start_ms),)
            case SpeechStopped():
                return NOTHING  # a pause inside the turn, until the end of turn says otherwise
            case Partial() if turn is not None:
                delta = turn.text.partial(turn.joined(event.text), turn.joined(
                    event.stable_text) if event.stable_text else "")
                return (self._item_delta(turn.item, delta),) if delta else NOTHING
            case Final():
                if turn is None:
                    self._turn = turn = _Turn(self._item(None))
                turn.finals.append(event)
                if not any(f.text for f in turn.finals):
                    return self._close_turn(event.end_ms)  # noise: an empty item, as OpenAI
                delta = turn.text.settle(turn.joined(""))
                return (self._item_delta(turn.item, delta),) if delta else NOTHING
            case EndOfTurn() if turn is not None:
                return self._close_turn(event.decided_at_ms - event.silence_ms)
            case Committed() if turn is not None:
                if self._commits:
                    self._commits.popleft()
                return self._close_turn(turn.finals[-1].end_ms if turn.finals else 0)
            case SegmentFailed() if turn is not None:
                self._turn = None
                return (self._msg(
                    "conversation.item.input_audio_transcription.failed", item_id=turn.item,
                    content_index=0, error={"type": "server_error",
                                            "code": "transcription_failed",
                                            "message": event.message, "param": None}),)
            case Cleared():
                self._turn = None
            case SessionEnd() if turn is not None and turn.finals:
                return (*self._close_turn(turn.finals[-1].end_ms), Close(1000))
        return None

    def _close_turn(self, end_ms: int) -> Outbound:
        """``speech_stopped``, ``committed``, the last delta and ``completed`` of the turn."""
        turn, self._turn = self._turn, None
        delta, transcript = turn.text.final(turn.joined(""))
        previous, self._last_item = self._last_item, turn.item
        frames = [self._msg("input_audio_buffer.speech_stopped", item_id=turn.item,
                            audio_end_ms=end_ms),
                  self._msg("input_audio_buffer.committed", item_id=turn.item,
                            previous_item_id=previous)]
        if delta:
            frames.append(self._item_delta(turn.item, delta))
        languages = [f.language for f in turn.finals if f.language]
        frames.append(self._completed(
            turn.item, transcript, sum(f.segment_duration_ms for f in turn.finals),
            languages[-1] if languages else None,
            tuple(w for f in turn.finals for w in f.words)))
        return tuple(frames)

    @property
    def _logprobs(self) -> bool:
        return LOGPROBS in (self.session.get("include") or ())

    def _item(self, seq: int | None) -> str:
        if seq is None or seq not in self._items:
            self._items_made += 1
            item = f"item_{self._id[:12]}{self._items_made:04d}"
            if seq is None:
                return item
            self._items[seq] = item
        return self._items[seq]

    def _text(self, seq: int) -> AppendOnlyText:
        return self._texts.setdefault(seq, AppendOnlyText())

    def _commit(self, seq: int | None) -> tuple[str, ...]:
        """``committed`` for the item (once), naming the item committed before it."""
        if seq is not None and seq in self._committed:
            return ()
        item = self._item(seq)
        if seq is not None:
            self._committed.add(seq)
        previous, self._last_item = self._last_item, item
        return (self._msg("input_audio_buffer.committed", item_id=item,
                          previous_item_id=previous),)

    def _delta(self, seq: int, delta: str) -> str:
        return self._item_delta(self._item(seq), delta)

    def _item_delta(self, item: str, delta: str) -> str:
        return self._msg("conversation.item.input_audio_transcription.delta",
                         item_id=item, content_index=0, delta=delta)

    def _final(self, f: Final) -> Outbound:
        frames: list[str] = list(self._commit(f.segment_seq))
        text = self._texts.pop(f.segment_seq, None) or AppendOnlyText()
        delta, transcript = text.final(f.text)
        if delta:
            frames.append(self._delta(f.segment_seq, delta))
        self._committed.discard(f.segment_seq)
        frames.append(self._completed(self._items.pop(f.segment_seq), transcript,
                                      f.segment_duration_ms, f.language, f.words))
        return tuple(frames)

    def _completed(self, item: str, transcript: str, duration_ms: int, language: str | None,
                   words: tuple[Word, ...]) -> str:
        completed: dict[str, Any] = {
            "item_id": item, "content_index": 0, "transcript": transcript,
            "usage": token_usage(duration_ms, transcript),
        }
        if language:
            completed["languages"] = [{"code": language,
                                       "name": LANGUAGE_NAMES.get(language, language)}]
        if self._logprobs and words and all(w.confidence for w in words):
            completed["logprobs"] = [{"token": w.word, "logprob": math.log(w.confidence),
                                      "bytes": list(w.word.encode())} for w in words]
        return self._msg("conversation.item.input_audio_transcription.completed",
                         **completed)

    def _committed_ack(self, c: Committed) -> Outbound:
        event_id = self._commits.popleft() if self._commits else None
        if c.segment_seq is not None:
            return NOTHING  # committed (and transcribed) with its final, just before
        if c.audio_ms < MIN_COMMIT_MS:
            return (self._error(
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_MS}ms of audio, but buffer only has {float(c.audio_ms):.2f}ms of "
                "audio.", code="input_audio_buffer_commit_empty", event_id=event_id),)
        # Audio, but no speech in it: an item with an empty transcript, as OpenAI gives.
        frames = self._commit(None)
        item = self._last_item
        return (*frames, self._msg(
            "conversation.item.input_audio_transcription.completed", item_id=item,
            content_index=0, transcript="", usage=token_usage(c.audio_ms, "")))

    def _error(self, message: str, *, code: str | None, param: str | None = None,
               event_id: str | None = None, kind: str = "invalid_request_error") -> str:
        return self._msg("error", error={"type": kind, "code": code, "message": message,
                                         "param": param, "event_id": event_id})

    def _msg(self, kind: str, **fields: Any) -> str:
        self._events += 1
        return json.dumps({"type": kind, "event_id": f"event_{self._id[:12]}{self._events}",
                           **fields}, ensure_ascii=False, separators=(",", ":"))


@dataclass
class _Turn:
    """A semantic_vad item: the finals of one turn, and its append-only transcript."""

    item: str
    text: AppendOnlyText = field(default_factory=AppendOnlyText)
    finals: list[Final] = field(default_factory=list)

    def joined(self, tail: str) -> str:
        """The turn's text so far, with ``tail`` (the open segment's) after it."""
        parts = [f.text for f in self.finals if f.text]
        return " ".join([*parts, tail] if tail else parts)


def _merge(target: dict, patch: dict) -> None:
    """Partial update: objects merge key by key, anything else (null included) replaces."""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = deepcopy(value)


def _number(obj: dict, key: str, low: float, high: float) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _bad(f"turn_detection.{key} must be a number from {low:g} to {high:g}",
                   param=f"session.audio.input.turn_detection.{key}")
    return value


def _rate(fmt: dict) -> int:
    if fmt["type"] != "audio/pcm":
        return 8000  # G.711 is 8 kHz
    rate = fmt.get("rate", 24000)
    if isinstance(rate, bool) or not isinstance(rate, int) or not 8000 <= rate <= 48000:
        raise _bad("audio/pcm rate must be an integer from 8000 to 48000 (OpenAI: 24000)",
                   param="session.audio.input.format.rate")
    return rate


def _from_beta(flat: Any) -> Any:
    """The beta's flat ``transcription_session.update`` session → the GA shape."""
    if not isinstance(flat, dict):
        return flat
    inp: dict[str, Any] = {}
    if "input_audio_format" in flat:
        fmt = _BETA_FORMATS.get(flat["input_audio_format"])
        if fmt is None:
            raise _bad("input_audio_format must be pcm16, g711_ulaw or g711_alaw",
                       param="session.input_audio_format")
        inp["format"] = {"type": fmt, "rate": 24000} if fmt == "audio/pcm" else {"type": fmt}
    if "input_audio_transcription" in flat:
        inp["transcription"] = flat["input_audio_transcription"]
    if "turn_detection" in flat:
        inp["turn_detection"] = flat["turn_detection"]
    if "input_audio_noise_reduction" in flat:
        inp["noise_reduction"] = flat["input_audio_noise_reduction"]
    session: dict[str, Any] = {"audio": {"input": inp}}
    if "include" in flat:
        session["include"] = flat["include"]
    return session


def _to_beta(session: dict) -> dict:
    inp = session["audio"]["input"]
    fmt = {v: k for k, v in _BETA_FORMATS.items()}[inp["format"]["type"]]
    return {"id": session["id"], "object": "realtime.transcription_session",
            "expires_at": 0, "input_audio_format": fmt,
            "input_audio_transcription": inp["transcription"],
            "turn_detection": inp["turn_detection"],
            "input_audio_noise_reduction": inp["noise_reduction"],
            "include": session.get("include"), "modalities": ["text"],
            "created_at": int(time.time())}
