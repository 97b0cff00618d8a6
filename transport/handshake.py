"""Refusing a WebSocket in the protocol's own style: a real HTTP status with the protocol's
error body before ``accept()`` (OpenAI, Deepgram, native), or, for clients that cannot read a
refused upgrade (kaldi-gstreamer-server's), accept and send the protocol's refusal message."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

from protocol.common import CLOSE_POLICY, CLOSE_TRY_AGAIN
from transport.admission import Refusal


async def deny(ws: WebSocket, protocol: Any, refusal: Refusal) -> None:
    accept_first = getattr(protocol, "refuse_after_accept", None)
    if accept_first is not None:
        await ws.accept()
        await ws.send_text(accept_first(refusal.status, refusal.code, refusal.message))
        await ws.close(CLOSE_TRY_AGAIN if refusal.status >= 500 else CLOSE_POLICY)
        return
    body = protocol.error_body(refusal.status, refusal.code, refusal.message, refusal.param)
    response = JSONResponse(body, status_code=refusal.status, headers=refusal.headers)
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(response)
    else:  # servers without the denial extension: closest equivalent is a close before accept
        await ws.close(CLOSE_TRY_AGAIN if refusal.status >= 500 else CLOSE_POLICY,
                       reason=refusal.message[:120])
