"""How sttd is served by uvicorn: one ``uvicorn.Config`` for ``sttd serve`` and the tests."""

from __future__ import annotations

from typing import Any

import uvicorn

from config import Settings
from transport import connection

# After the drain (transport/drain.py) has finished every session it could, uvicorn closes
# what is left (1012) and waits this long for responses still being written.
_AFTER_DRAIN_GRACE_SEC = 5


def uvicorn_config(settings: Settings, app: Any, **overrides: Any) -> uvicorn.Config:
    """``app``: an ASGI app, or an import string (with ``factory=True`` in ``overrides``)."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "ws_max_size": max(settings.max_frame_bytes * 2, 1 << 20),
        "log_config": None,
        "access_log": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": _AFTER_DRAIN_GRACE_SEC,
        "ssl_certfile": str(settings.ssl_certfile) if settings.ssl_certfile else None,
        "ssl_keyfile": str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
        **connection.uvicorn_protocols(settings),
        **overrides,
    }
    return uvicorn.Config(app, **options)
