"""kaldi-gstreamer-server's routes: ``/client/ws/speech`` on the shared live route,
``PUT``/``POST /client/dynamic/recognize`` on the shared batch route, and the
``/client/ws/status`` socket that reports free slots as sessions come and go."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from protocol.common import CLOSE_POLICY
from protocol.kaldi_gst import KaldiGstProtocol
from protocol.kaldi_gst_batch import KaldiGstBatchProtocol
from transport.batch import openapi, serve_batch
from transport.context import ServerContext
from transport.live_route import attach_live


def attach(app: FastAPI) -> None:
    live, http = KaldiGstProtocol(), KaldiGstBatchProtocol()
    attach_live(app, live, "/client/ws/speech")

    async def recognize(request: Request) -> Response:
        return await serve_batch(request, http)

    for method in ("PUT", "POST"):  # one operation each: OpenAPI ids must be unique
        app.add_api_route("/client/dynamic/recognize", recognize, methods=[method],
                          operation_id=f"kgs_recognize_{method.lower()}",
                          openapi_extra=openapi(http), response_class=Response,
                          summary="Transcribe an audio file (kaldi-gstreamer-server-compatible)")

    async def status(websocket: WebSocket) -> None:
        await serve_status(websocket, live)

    app.add_api_websocket_route("/client/ws/status", status)


def status_message(ctx: ServerContext) -> dict[str, int]:
    free = ctx.slots.free if ctx.ready and not ctx.draining else 0
    return {"num_workers_available": max(0, free),
            "num_requests_processed": ctx.slots.released}


async def serve_status(websocket: WebSocket, protocol: KaldiGstProtocol) -> None:
    """The current counts on connect and on every change, until the client leaves."""
    ctx: ServerContext = websocket.app.state.ctx
    await websocket.accept()
    if not ctx.gate.authorised(websocket.headers, websocket.query_params,
                               protocol.credentials):
        await websocket.send_json({"status": 5, "message": "a valid API key is required"})
        await websocket.close(CLOSE_POLICY)
        return
    changed = asyncio.Event()
    unwatch = ctx.slots.watch(changed.set)

    async def until_closed() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass

    closed = asyncio.create_task(until_closed())
    try:
        while not closed.done():
            changed.clear()
            await websocket.send_json(status_message(ctx))
            waiting = asyncio.create_task(changed.wait())
            await asyncio.wait((closed, waiting), return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client left while we were sending
    finally:
        unwatch()
        closed.cancel()
