"""What every wire protocol shares: client commands and the protocol error."""

from __future__ import annotations

from enum import Enum

from session.events import ErrorCode


class Command(Enum):
    COMMIT = "commit"
    EOS = "eos"
    PING = "ping"


class ProtocolError(Exception):
    """Bad client input; becomes an ``error`` message and a close (or a handshake denial)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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
