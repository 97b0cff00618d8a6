"""The browser page at ``/`` (``STT_WEB_UI=true``): static files from ``web/``, no build step,
nothing fetched from elsewhere, under a strict Content-Security-Policy.

Two small JSON helpers serve the page: ``/web/config.json`` says whether a token is needed
and what the model is, and ``/web/check`` explains a refused WebSocket (a browser sees only a
failed connection, never the handshake's HTTP status) by re-running the handshake's checks
without taking a session slot.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from config import REPO_ROOT
from protocol.native import NativeProtocol
from transport.admission import Refusal, admit
from transport.context import ServerContext

WEB_DIR = REPO_ROOT / "web"
# Served files by name, with their types: an allow-list, so no path reaches the disk.
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "audio.js": "text/javascript; charset=utf-8",
    "session.js": "text/javascript; charset=utf-8",
    "transcript.js": "text/javascript; charset=utf-8",
    "worklet.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "media-src 'self' blob:",  # a chosen file's duration is read through a blob: URL
    "connect-src 'self' ws: wss:",
    "worker-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
])
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
    "Cache-Control": "no-cache",
}
_NATIVE = NativeProtocol()


def attach(app: FastAPI) -> None:
    if not app.state.ctx.settings.web_ui:
        return
    app.add_api_route("/", index, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_api_route("/web/config.json", page_config, methods=["GET"], include_in_schema=False)
    app.add_api_route("/web/check", check, methods=["GET"], include_in_schema=False)
    app.add_api_route("/web/{name}", asset, methods=["GET", "HEAD"], include_in_schema=False)


async def index() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", media_type="text/html; charset=utf-8",
                        headers=SECURITY_HEADERS)


async def asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        return JSONResponse({"error": {"code": "not_found", "message": "no such file"}},
                            status_code=404)
    return FileResponse(WEB_DIR / name, media_type=media_type, headers=SECURITY_HEADERS)


async def page_config(request: Request) -> JSONResponse:
    ctx: ServerContext = request.app.state.ctx
    caps = ctx.backend.capabilities
    return JSONResponse({
        "auth_required": ctx.gate.enabled,
        "backend": ctx.backend.name,
        "model": ctx.backend.model,
        "languages": [lang for lang in caps.languages if lang != "*"],
        "vad_silence_ms": ctx.settings.vad_silence_ms,
    }, headers={"Cache-Control": "no-store"})


async def check(request: Request) -> JSONResponse:
    """What the native handshake would answer to this query now (``admit`` as a probe: no
    slot taken, nothing counted), as ``{"status", "code", "message"}``."""
    ctx: ServerContext = request.app.state.ctx
    query = request.query_params
    # The page's own Origin, the one its WebSocket sends (a same-origin GET may carry none).
    headers = {**request.headers, "origin": request.headers.get(
        "origin", str(request.base_url).rstrip("/"))}
    admitted = admit(ctx, _NATIVE, headers, query, probe=True,
                     parse=lambda: _NATIVE.handshake(query, headers, ctx.settings))
    if isinstance(admitted, Refusal):
        status, code, message = admitted.status, admitted.code, admitted.message
    else:
        admitted[1].decoder.close()
        refused = _unknown_language(ctx, admitted[1].options.language)
        status, code, message = ((400, "bad_request", refused) if refused else
                                 (200, "ok", "the server would accept this session"))
    return JSONResponse({"status": status, "code": code, "message": message},
                        headers={"Cache-Control": "no-store"})


def _unknown_language(ctx: ServerContext, language: str | None) -> str | None:
    """The backend's own refusal, which the handshake leaves to opening the stream."""
    languages = ctx.backend.capabilities.languages
    primary = (language or "auto").split("-")[0].lower()
    if primary != "auto" and "*" not in languages and primary not in languages:
        return (f"model {ctx.backend.model} does not recognise language {language!r} "
                f"(it knows: {', '.join(languages)})")
    return None
