"""structlog set-up: JSON lines (or console for humans), stdlib and uvicorn routed through it.

Every record, sttd's or uvicorn's, goes through one formatter that renders exceptions (type,
message and stack; structured in JSON) and redacts credentials: ``?token=`` and the like in
logged URLs, ``Authorization`` headers, values of keys named like a secret.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import weakref
from typing import Any

import structlog
from structlog.tracebacks import ExceptionDictTransformer

REDACTED = "[redacted]"

# Parameter, header and key names that carry a credential: token, access_token, api_key,
# apiKey, key, secret, client_secret, password, auth, authorization, signature, sig, jwt …
_SECRET_NAME = (
    r"(?:[\w-]*[_.-])?(?:access_?token|refresh_?token|token|api_?key|key|secret|password|"
    r"passwd|pwd|auth|authorization|credentials?|signature|sig|jwt|session_?key)(?:[_.-][\w-]*)?"
)
_SECRET_KEY = re.compile(rf"(?i){_SECRET_NAME}")
_SECRETS = [
    # name=value: query strings, form bodies, console key=value
    (re.compile(rf"(?i)(?<![\w.-])({_SECRET_NAME})=[^&#\s\"'<>]*"), rf"\1={REDACTED}"),
    # 'name': 'value' and "name": "value": reprs of dicts, JSON inside a message
    (re.compile(rf"(?i)([\"'])({_SECRET_NAME})\1(\s*:\s*)([\"']).*?\4"),
     rf"\1\2\1\3\4{REDACTED}\4"),
    # Authorization: <scheme> <credentials> (a header line)
    (re.compile(r"(?i)\b((?:proxy-)?authorization\s*:\s*)(?:[\w-]+\s+)?[^\s\"',;]+"),
     rf"\1{REDACTED}"),
    # Bearer <token>, Basic <base64>, wherever they appear (header tuples, reprs)
    (re.compile(r"(?i)\b(bearer|basic)\s+(?!(?:tokens?|auth\w*|credentials?|scheme)\b)"
                r"[\w.~+/=-]+"), rf"\1 {REDACTED}"),
]


def redact(text: str) -> str:
    """``text`` with every credential it appears to carry replaced by ``[redacted]``."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and _SECRET_KEY.fullmatch(k) else
                _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(v) for v in value)
    return value


def _redact_event(_logger, _name, event_dict: dict) -> dict:
    return _redact_value(event_dict)


class _UvicornChatter(logging.Filter):
    """On ``uvicorn.error``: handshake lines and the false error after a refused one.

    uvicorn logs each handshake as ``<client> - "WebSocket <path?query>" <status>``; sttd logs
    its own ``session.opened``, so accepted lines go, refusals stay (query redacted). A refusal
    sent with the denial-response extension never counts as a completed handshake, so uvicorn
    then logs "ASGI callable returned without completing handshake." at ERROR: it is dropped
    for connections that were refused (same task), kept for any other. Records are matched by
    message, not by the protocol class that logs them. The logger's level stays at INFO at
    most, so refusals are seen at any configured level; ``level`` is applied here instead.
    """

    _HANDSHAKE = re.compile(r'"WebSocket [^"]*" (?:\d{3}|\[accepted\])$')
    _NO_HANDSHAKE = ("ASGI callable returned without completing handshake.",
                     "ASGI callable returned without sending handshake.")

    def __init__(self) -> None:
        super().__init__()
        self.level = logging.INFO
        self._refused: weakref.WeakSet[asyncio.Task] = weakref.WeakSet()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("connection "):  # websockets' "connection open/closed"
            return False
        if self._HANDSHAKE.search(message):
            if message.endswith("[accepted]"):
                return False
            if (task := _current_task()) is not None:
                self._refused.add(task)
            record.msg, record.args = redact(message), ()  # for any other handler, too
        elif message in self._NO_HANDSHAKE and (task := _current_task()) in self._refused:
            return False
        return record.levelno >= self.level


def _current_task() -> asyncio.Task | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no event loop in this thread
        return None


_uvicorn_chatter = _UvicornChatter()  # one instance: configure_logging may run many times


def configure_logging(level: str = "info", json: bool = True) -> None:
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json:  # exceptions as {"exc_type", "exc_value", "frames": [...]}; no locals (secrets)
        exceptions = structlog.processors.ExceptionRenderer(
            ExceptionDictTransformer(show_locals=False))
        renderer = structlog.processors.JSONRenderer()
    else:  # a plain traceback after the line
        exceptions = structlog.processors.format_exc_info
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                        exceptions, _redact_event, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # One line per WebSocket handshake is noise at hundreds of sessions: sttd logs its own.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    _uvicorn_chatter.level = root.level
    error = logging.getLogger("uvicorn.error")
    error.setLevel(min(root.level, logging.INFO))
    error.addFilter(_uvicorn_chatter)
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # one line per decode


def get_logger(name: str = "sttd") -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
