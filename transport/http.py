"""Operational endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from backends.base import HealthChecked
from transport.context import ServerContext

_HEALTH_TIMEOUT = 5.0  # an engine that cannot answer a probe this fast is not serving
_RETRY_FULL, _RETRY_UNAVAILABLE = 1, 5  # Retry-After of /ready's 503, in seconds


def attach(app: FastAPI) -> None:
    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/ready", ready, methods=["GET"])
    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)


async def health() -> dict[str, str]:
    """The process is alive and its event loop answers."""
    return {"status": "ok"}


async def ready(request: Request) -> JSONResponse:
    """200 when the backend is loaded, inference threads run and a session slot is free."""
    ctx: ServerContext = request.app.state.ctx
    body = {
        "backend": ctx.backend.name,
        "model": ctx.backend.model,
        "loaded": ctx.ready,
        "inference_threads": ctx.pool.alive,
        "sessions": len(ctx.slots),
        "max_sessions": ctx.slots.limit,
    }
    serving = ctx.ready and ctx.pool.alive > 0 and not ctx.draining
    if ctx.draining:
        body["draining"] = True
    if ctx.ready and isinstance(ctx.backend, HealthChecked):
        problem = await _engine_problem(ctx.backend)
        body["engine"] = problem or "ok"
        serving = serving and problem is None
        # A dead engine flips stt_backend_ready (and its alert) at the next probe.
        ctx.metrics.backend_ready.labels(ctx.backend.name).set(problem is None)
    ok = serving and ctx.slots.free > 0
    body["status"] = "ready" if ok else "draining" if ctx.draining else "unavailable"
    if ok:
        return JSONResponse(body)
    # Only full: a slot frees within a session's length. Draining or broken takes longer.
    retry = _RETRY_FULL if serving else _RETRY_UNAVAILABLE
    return JSONResponse(body, status_code=503, headers={"Retry-After": str(retry)})


async def _engine_problem(backend: HealthChecked) -> str | None:
    try:
        async with asyncio.timeout(_HEALTH_TIMEOUT):
            await backend.check_health()
    except TimeoutError:
        return f"no answer to a health check in {_HEALTH_TIMEOUT:g} s"
    except Exception as exc:  # whatever the engine raised is the reason it is unhealthy
        return f"{type(exc).__name__}: {exc}"
    return None


async def metrics(request: Request) -> Response:
    ctx: ServerContext = request.app.state.ctx
    if ctx.gate.protect_metrics and not ctx.gate.authorised(request.headers, request.query_params):
        return JSONResponse({"error": {"code": "unauthorized",
                                       "message": "a valid bearer token is required"}},
                            status_code=401, headers={"WWW-Authenticate": "Bearer"})
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)
