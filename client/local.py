"""``sttd transcribe --local``: the server's own app in this process, reached through httpx's
ASGI transport, so a local run decodes, segments, recognises and renders exactly as
``POST /v1/stt/transcribe`` does (one code path, no port)."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx

from config import Settings

BASE_URL = "http://sttd.local"


def local_settings(backend: str | None = None) -> Settings:
    """The environment's settings (``STT_*``, ``.env``), less what only a served process
    needs: no keys to check, and warnings only on stderr, where the progress is."""
    overrides: dict = {"auth_tokens": "", "web_ui": False}
    if "STT_LOG_LEVEL" not in os.environ:
        overrides["log_level"] = "warning"
    if backend:
        overrides["backend"] = backend
    return Settings(**overrides)


class LocalStartFailed(Exception):
    """The app could not start here: bad settings, a model or library missing."""


@asynccontextmanager
async def local_client(backend: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an in-process app: the backend is loaded on entry, closed on exit."""
    from app import create_app

    sigint = signal.getsignal(signal.SIGINT)
    async with AsyncExitStack() as stack:
        try:
            app = create_app(local_settings(backend))
            await stack.enter_async_context(app.router.lifespan_context(app))
        except Exception as exc:  # whatever a backend raises while loading
            raise LocalStartFailed(f"{type(exc).__name__}: {exc}") from exc
        # The lifespan installs the server's drain on SIGINT; a CLI's Ctrl-C should stop it.
        signal.signal(signal.SIGINT, sigint)
        yield await stack.enter_async_context(httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=BASE_URL, timeout=None))
