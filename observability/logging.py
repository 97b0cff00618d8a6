"""structlog set-up: JSON lines (or console for humans), stdlib and uvicorn routed through it."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(level: str = "info", json: bool = True) -> None:
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
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
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
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
    logging.getLogger("uvicorn.error").addFilter(_drop_connection_chatter)
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # one line per decode


def _drop_connection_chatter(record: logging.LogRecord) -> bool:
    msg = record.getMessage()
    return not (msg.startswith("connection ") or msg.endswith("[accepted]") or "403" in msg and
                "WebSocket" in msg)


def get_logger(name: str = "sttd") -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
