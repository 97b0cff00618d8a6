"""The WebSocket route every live protocol shares: admit, open the recognizer, accept in the
protocol's terms, run the session on the shared pumps. A protocol brings only its object
(``handshake`` → a per-session wire, its credentials and refusal style)."""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from fastapi import FastAPI
from starlette.websockets import WebSocket

from protocol.common import ProtocolError
from protocol.pcm import TARGET_RATE
from session.events import Ready
from transport.admission import Refusal, admit, bad_request
from transport.context import ServerContext
from transport.handshake import deny
from transport.live import LiveSession
from transport.recognition import open_recognizer

log = structlog.get_logger("sttd.session")


def attach_live(app: FastAPI, protocol: Any, *paths: str) -> None:
    async def endpoint(websocket: WebSocket) -> None:
        await serve_live(websocket, protocol)

    endpoint.__name__ = f"{protocol.name}_stream"
    for path in paths:
        app.add_api_websocket_route(path, endpoint)


async def serve_live(websocket: WebSocket, protocol: Any) -> None:
    ctx: ServerContext = websocket.app.state.ctx
    admitted = admit(ctx, protocol, websocket.headers, websocket.query_params,
                     lambda: protocol.handshake(websocket.query_params, websocket.headers,
                                                ctx.settings))
    if isinstance(admitted, Refusal):
        await deny(websocket, protocol, admitted)
        return
    slot, wire = admitted
    ctx.metrics.active_sessions.inc()
    try:
        try:
            recognizer = await open_recognizer(ctx, wire.options)
        except ProtocolError as exc:
            wire.decoder.close()
            await deny(websocket, protocol, bad_request(ctx, exc))
            return
        session_id = uuid.uuid4().hex
        slog = log.bind(session_id=session_id, protocol=protocol.name,
                        call_id=wire.log_context.get("call_id"))
        offered = websocket.scope.get("subprotocols", [])
        extra = getattr(wire, "accept_headers", {})  # e.g. Deepgram's dg-request-id
        await websocket.accept(subprotocol=protocol.subprotocol(offered),
                               headers=[(k.encode(), v.encode()) for k, v in extra.items()])
        slog.info("session.opened", **{k: v for k, v in wire.log_context.items()
                                       if k != "call_id"})
        backend = ctx.backend
        ready = Ready(session_id, TARGET_RATE, backend.name, backend.model)
        live = LiveSession(websocket, ctx, wire, recognizer, ready, slog)
        slot.job = live.job
        slot.drain = live.drain
        await live.run()
    finally:
        ctx.slots.release(slot)
        ctx.metrics.active_sessions.dec()
