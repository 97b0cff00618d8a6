"""What every wire protocol shares: what a parsed client frame can be, what an encoded event
becomes, the protocol error, and RFC 6455 close codes.

A protocol's parser turns each client frame into an ``Inbound`` (audio bytes in the session's
current format, a ``Command``, a ``Configure``, or None for a frame that needs no action);
its encoder turns each internal event into ``Outbound`` frames, ending with a ``Close`` when
the event ends the session. The pumps in ``transport/live.py`` know nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from session.events import ErrorCode, SessionError
from session.options import RecognitionOptions


class Command(Enum):
    COMMIT = "commit"  # finalize the open segment, keep going
    EOS = "eos"  # finalize, then end the session
    PING = "ping"
    CLEAR = "clear"  # forget the open segment and the audio not yet recognised


@dataclass(frozen=True, slots=True)
class AudioIn:
    """Audio in the session's current wire format (the protocol's decoder makes it PCM)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Configure:
    """Mid-session reconfiguration: ``options`` is the whole new set (already merged), and
    ``decoder`` the new audio decoder when the audio format changed."""

    options: RecognitionOptions
    decoder: object | None = None


Inbound = AudioIn | Command | Configure | None


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str = ""


Outbound = tuple[str | Close, ...]
NOTHING: Outbound = ()


class ProtocolError(Exception):
    """Bad client input. Fatal by default: an error message and a close (or a handshake
    denial). A recoverable one (``fatal=False``) becomes an ``InputRejected`` event and the
    session goes on, for protocols whose clients expect that (OpenAI Realtime)."""

    def __init__(self, code: ErrorCode, message: str, *, fatal: bool = True,
                 detail: str | None = None, event_id: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fatal = fatal
        self.detail = detail
        self.event_id = event_id
        self.param = param


# RFC 6455 close codes; the OpenAI SDK retries 1011/1013 and not 1008.
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_SERVICE_RESTART = 1012  # the server is going down: reconnect (the OpenAI SDK retries it)
CLOSE_TRY_AGAIN = 1013

CLOSE_CODES: dict[ErrorCode, int] = {
    ErrorCode.BAD_REQUEST: CLOSE_POLICY,
    ErrorCode.INVALID_AUDIO: CLOSE_POLICY,
    ErrorCode.UNSUPPORTED_AUDIO: CLOSE_POLICY,
    ErrorCode.AUDIO_TOO_LONG: CLOSE_POLICY,
    ErrorCode.UPLOAD_TOO_LARGE: CLOSE_TOO_BIG,
    ErrorCode.UPLOAD_TIMEOUT: CLOSE_POLICY,
    ErrorCode.FRAME_TOO_LARGE: CLOSE_TOO_BIG,
    ErrorCode.AUDIO_QUEUE_OVERFLOW: CLOSE_TRY_AGAIN,
    ErrorCode.IDLE_TIMEOUT: CLOSE_POLICY,
    ErrorCode.SLOW_CONSUMER: CLOSE_POLICY,
    ErrorCode.SESSION_TOO_LONG: CLOSE_POLICY,
    ErrorCode.BACKEND_ERROR: CLOSE_INTERNAL,
    ErrorCode.INTERNAL_ERROR: CLOSE_INTERNAL,
    ErrorCode.SHUTTING_DOWN: CLOSE_SERVICE_RESTART,
}


def close_for(error: SessionError) -> Close:
    """The close that follows a fatal error, for every protocol: a failure the backend says
    could succeed later asks the client to try again (1013)."""
    code = CLOSE_TRY_AGAIN if error.retryable else CLOSE_CODES.get(error.code, CLOSE_INTERNAL)
    return Close(code, error.message[:120])


@dataclass(frozen=True, slots=True)
class Credential:
    """Where a protocol's clients present their key (``transport/auth.py`` reads it):
    ``header`` with an Authorization scheme (``bearer``, ``token``), ``query`` with a
    parameter name, ``subprotocol`` with a ``Sec-WebSocket-Protocol`` prefix, or
    ``subprotocol_pair`` with the entry that precedes the key."""

    where: str
    name: str


BEARER = Credential("header", "bearer")
TOKEN = Credential("header", "token")  # Deepgram's "Authorization: Token <key>"
QUERY_TOKEN = Credential("query", "token")  # browsers cannot set WebSocket headers


def refusal_body(status: int, code: str, message: str, param: str | None = None) -> dict:
    """sttd's own error object (native protocol and batch endpoint)."""
    return {"error": {"code": code, "message": message}}


@dataclass(frozen=True, slots=True)
class Upload:
    """What a batch renderer may report about the request beyond its transcript."""

    sha256: str  # of the uploaded bytes, as received
    backend: str
    model: str
