"""Connection-level limits below the ASGI app (uvicorn protocol classes).

Placeholder: the stock protocols. Replaced by the hardened ones (header size and time limits,
pending-connection caps, handshake refusals that reach the client, bounded pong buffering).
"""

from __future__ import annotations

from typing import Any

from config import Settings


def uvicorn_protocols(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config``: the HTTP and WebSocket protocol classes.
    Values must pickle (``--workers`` spawns processes): module-level classes or names."""
    return {"http": "httptools", "ws": "websockets-sansio"}
