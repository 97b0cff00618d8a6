"""The internal event stream of a session. Wire protocols encode these; nothing else does."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from backends.base import Alternative, Word
from session.options import RecognitionOptions


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad_request"
    INVALID_AUDIO = "invalid_audio"
    UNSUPPORTED_AUDIO = "unsupported_audio"
    AUDIO_TOO_LONG = "audio_too_long"
    UPLOAD_TOO_LARGE = "upload_too_large"
    UPLOAD_TIMEOUT = "upload_timeout"
    FRAME_TOO_LARGE = "frame_too_large"
    AUDIO_QUEUE_OVERFLOW = "audio_queue_overflow"
    IDLE_TIMEOUT = "idle_timeout"
    SLOW_CONSUMER = "slow_consumer"
    SESSION_TOO_LONG = "session_too_long"
    BACKEND_ERROR = "backend_error"
    INTERNAL_ERROR = "internal_error"
    SHUTTING_DOWN = "shutting_down"


class FinalReason(StrEnum):
    ENDPOINT = "endpoint"
    COMMIT = "commit"
    EOS = "eos"
    MAX_SEGMENT = "max_segment"
    SHUTDOWN = "shutdown"  # the server is draining (SIGTERM): the segment is cut short


@dataclass(frozen=True, slots=True)
class Ready:
    session_id: str
    sample_rate: int
    backend: str
    model: str


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    segment_seq: int
    start_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    """The endpointer closed the segment at ``end_ms``: sent ahead of its (slower) final."""

    segment_seq: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class Partial:
    segment_seq: int
    text: str
    start_ms: int
    end_ms: int
    # The leading part of ``text`` that is settled: the segment's final begins with it (the
    # rest may still change). 0: nothing promised yet.
    stable_chars: int = 0

    @property
    def stable_text(self) -> str:
        return self.text[: self.stable_chars]


@dataclass(frozen=True, slots=True)
class Final:
    segment_seq: int
    text: str
    start_ms: int
    end_ms: int
    reason: FinalReason
    words: tuple[Word, ...] = ()  # times are session milliseconds
    confidence: float | None = None
    language: str | None = None
    alternatives: tuple[Alternative, ...] = ()
    first_token_ms: int | None = None  # speech start seen → first text produced
    latency_ms: int = 0  # segment end seen → final produced
    segment_duration_ms: int = 0
    end_confidence: float | None = None  # of the closing punctuation mark (Hypothesis)


@dataclass(frozen=True, slots=True)
class Committed:
    """A commit was carried out: ``segment_seq`` is the segment it closed (its final came
    first), or None when no segment was open."""

    segment_seq: int | None
    audio_ms: int = 0  # audio received since the previous commit (or the start)


@dataclass(frozen=True, slots=True)
class Cleared:
    """A clear was carried out: the open segment and the audio before it are forgotten."""


@dataclass(frozen=True, slots=True)
class Configured:
    """A mid-session reconfiguration took effect (in order with the audio around it)."""

    options: RecognitionOptions


@dataclass(frozen=True, slots=True)
class InputRejected:
    """A client message was refused but the session goes on (a recoverable error)."""

    code: ErrorCode
    message: str
    detail: str | None = None  # the protocol's own error code, e.g. OpenAI's
    event_id: str | None = None  # the client event it answers, when it named one
    param: str | None = None


@dataclass(frozen=True, slots=True)
class SegmentFailed:
    """Recognition of one segment failed; a ``SessionError`` follows."""

    segment_seq: int
    message: str


@dataclass(frozen=True, slots=True)
class AudioDropped:
    dropped_ms: int
    total_dropped_ms: int


@dataclass(frozen=True, slots=True)
class PostprocessFailed:
    """The external post-processor did not rewrite this segment's final (sent as it was)."""

    segment_seq: int
    message: str


@dataclass(frozen=True, slots=True)
class Pong:
    pass


@dataclass(frozen=True, slots=True)
class SessionError:
    """Fatal: the session is closed after this is sent."""

    code: ErrorCode
    message: str
    retryable: bool = False  # the same request could succeed later (close 1013)


@dataclass(frozen=True, slots=True)
class EndOfTurn:
    """The speaker's turn is over: ``silence_ms`` of audio without speech followed the end
    of its last recognised speech (``session.turns``), decided when ``decided_at_ms`` of
    session audio had been heard. Comes after the final of the turn's last segment.
    ``segments``: the finals with words the turn closes; ``cue``: how its last words ended
    (complete | trailing | none), which chose the ``required_silence_ms``."""

    last_word_end_ms: int
    silence_ms: int
    segments: tuple[int, ...] = ()
    cue: str = "none"
    required_silence_ms: int = 0
    decided_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class SessionEnd:
    """Everything has been flushed; close normally. ``audio_ms``: the session's audio."""

    audio_ms: int = 0


Event = (Ready | SpeechStarted | SpeechStopped | Partial | Final | Committed | Cleared
         | Configured | InputRejected | SegmentFailed | AudioDropped | Pong | SessionError
         | EndOfTurn | PostprocessFailed | SessionEnd)
