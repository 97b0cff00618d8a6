"""Refusing a WebSocket before ``accept()`` with a real HTTP status and a JSON body."""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

from protocol.common import CLOSE_POLICY, CLOSE_TRY_AGAIN


async def deny(ws: WebSocket, status: int, code: str, message: str,
               headers: dict[str, str] | None = None) -> None:
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    response = JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                            headers=headers)
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(response)
    else:  # servers without the denial extension: closest equivalent is a close before accept
        await ws.close(CLOSE_TRY_AGAIN if status >= 500 else CLOSE_POLICY, reason=message[:120])
