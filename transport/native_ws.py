"""``/v1/stt/ws``: sttd's native streaming protocol on the shared live route."""

from __future__ import annotations

from fastapi import FastAPI

from protocol.native import NativeProtocol
from transport.live_route import attach_live


def attach(app: FastAPI) -> None:
    attach_live(app, NativeProtocol(), "/v1/stt/ws")
