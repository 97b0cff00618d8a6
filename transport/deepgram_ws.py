"""``/v1/listen``: Deepgram's live API on the shared live route (pre-recorded ``POST`` on the
same path is in ``transport.batch``)."""

from __future__ import annotations

from fastapi import FastAPI

from protocol.deepgram import DeepgramProtocol
from transport.live_route import attach_live


def attach(app: FastAPI) -> None:
    attach_live(app, DeepgramProtocol(), "/v1/listen")
