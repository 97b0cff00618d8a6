"""Who gets a session: one check list for every protocol, live or batch.

In order: the key (401), the browser Origin (403), the request's own parameters (400, when
the protocol parses them before the upgrade), then the server's state: draining (503 with
Retry-After), not loaded yet (503), full (the protocol's status: 503, or 429 where clients
back off on it). Each refusal is counted in ``stt_rejections_total{reason}``; how it reaches
the client (a status before the upgrade, or a message after accepting) is the protocol's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from protocol.common import ProtocolError
from transport.capacity import Slot
from transport.context import ServerContext

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)
    param: str | None = None


def admit(ctx: ServerContext, protocol: Any, headers: Mapping[str, str],
          query: Mapping[str, str],
          parse: Callable[[], T] | None = None,
          probe: bool = False) -> tuple[Slot | None, T | None] | Refusal:
    """A taken slot (and what ``parse`` returned), or why not. The caller releases the slot.
    ``probe``: only say what the answer would be (no slot taken, nothing counted): the web
    page asks, since a browser never sees a refused upgrade's status."""
    m = ctx.metrics

    def _refuse(reason: str, refusal: Refusal) -> Refusal:
        if not probe:
            m.rejections.labels(reason).inc()
        return refusal

    if not ctx.gate.authorised(headers, query, protocol.credentials):
        return _refuse("unauthorized", Refusal(
            401, "unauthorized", "a valid API key is required",
            {"WWW-Authenticate": protocol.auth_challenge}))
    if not ctx.gate.origin_allowed(headers):
        return _refuse("forbidden_origin",
                       Refusal(403, "forbidden_origin", "this Origin may not connect"))
    parsed = None
    if parse is not None:
        try:
            parsed = parse()
        except ProtocolError as exc:
            return _refuse("bad_request", _bad_request(exc))
    if ctx.draining:
        return _refuse("draining", Refusal(
            503, "draining", "the server is shutting down; retry elsewhere",
            {"Retry-After": "1"}))
    if not ctx.ready:
        return _refuse("not_ready", Refusal(503, "not_ready",
                                                 "the backend is not loaded yet"))
    slot = None if probe else Slot()
    if (ctx.slots.free <= 0) if probe else not ctx.slots.try_take(slot):
        return _refuse("capacity", Refusal(
            protocol.capacity_status, "capacity",
            f"server is full ({ctx.slots.limit} sessions)", {"Retry-After": "1"}))
    if not probe:
        m.sessions_opened.labels(protocol.name).inc()
    return slot, parsed


def bad_request(ctx: ServerContext, exc: ProtocolError) -> Refusal:
    ctx.metrics.rejections.labels("bad_request").inc()
    return _bad_request(exc)


def _bad_request(exc: ProtocolError) -> Refusal:
    return Refusal(400, exc.code.value, exc.message, param=exc.param)
