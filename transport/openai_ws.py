"""``/v1/realtime``: OpenAI's Realtime API (transcription sessions) on the shared live route."""

from __future__ import annotations

from fastapi import FastAPI

from protocol.openai_realtime import OpenAIRealtimeProtocol
from transport.live_route import attach_live


def attach(app: FastAPI) -> None:
    attach_live(app, OpenAIRealtimeProtocol(), "/v1/realtime")
