"""Application factory: ``create_app(settings)`` wires backend, inference pool and routers.

``uvicorn app:app`` works too: the module attribute ``app`` is built on first access from the
environment, so importing this module does nothing.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack, asynccontextmanager

import structlog
from fastapi import FastAPI

from backends.base import ASRBackend, EngineBacked
from backends.registry import create_backend
from config import Settings
from inference.pool import InferencePool, LoopBatcher
from observability.logging import configure_logging
from observability.metrics import Metrics
from session.events import ErrorCode, FinalReason
from transport import batch, deepgram_ws, http, kaldi_gst, native_ws, openai_ws, web_ui
from transport.agent import start_agent, stop_agent
from transport.auth import Gate
from transport.capacity import SessionSlots
from transport.connection import METRICS_STATE_KEY, REFUSAL_REASONS
from transport.context import ServerContext
from transport.drain import install_signal_drain

log = structlog.get_logger("sttd")


def create_app(settings: Settings | None = None, backend: ASRBackend | None = None) -> FastAPI:
    """``backend`` replaces the one ``settings`` names (tests inject fakes at the GPU edge)."""
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_json)
    metrics = Metrics()
    backend = backend or create_backend(settings)
    # A backend whose finals wait on an engine elsewhere asks for one thread per final.
    threads = max(settings.inference_threads, backend.capabilities.inference_threads)
    ctx = ServerContext(
        settings=settings,
        backend=backend,
        pool=InferencePool(threads, job_timeout=settings.job_timeout_sec),
        metrics=metrics,
        slots=SessionSlots(settings.max_sessions),
        gate=Gate(settings),
    )
    if settings.postprocessor:
        from transport.postprocess import PostProcessor

        ctx.postprocessor = PostProcessor(
            settings.postprocessor, timeout_s=settings.postprocessor_timeout_sec,
            processes=settings.postprocessor_processes, metrics=metrics)
    metrics.max_sessions.set(settings.max_sessions)
    metrics.preset({
        metrics.sessions: ("completed", "disconnected", "error", "drained", "drain_timeout"),
        metrics.rejections: ("bad_request", "capacity", "not_ready", "unauthorized",
                             "forbidden_origin", "draining"),
        metrics.errors: [code.value for code in ErrorCode],
        metrics.audio_dropped: ("queue_full", "disconnect", "session_ended"),
        metrics.segments: [reason.value for reason in FinalReason],
        metrics.connections_refused: REFUSAL_REASONS,
        metrics.postprocess_failures: ("timeout", "error"),
        metrics.sessions_opened: ("native", "openai_realtime", "deepgram", "kaldi_gst",
                                  "native_batch", "openai_batch", "deepgram_batch",
                                  "kaldi_gst_batch"),
    })
    metrics.watch_queues(lambda: _queue_depths(ctx))
    if isinstance(backend, EngineBacked):
        backend.on_decode = metrics.observe_decode
        metrics.engine_in_flight.set_function(lambda: backend.decodes_in_flight)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with AsyncExitStack() as stack:
            if settings.agent_port:  # before the model loads: a taken port fails fast
                agent_server = await start_agent(ctx, settings.host, settings.agent_port)
                stack.push_async_callback(stop_agent, agent_server)
            log.info("backend.loading", backend=ctx.backend.name)
            stack.callback(ctx.backend.close)
            if ctx.postprocessor is not None:
                stack.callback(ctx.postprocessor.close)
            await asyncio.to_thread(ctx.backend.load)
            if settings.vad == "silero":  # fail at start-up, not at the first session
                from session.silero import load_silero

                await asyncio.to_thread(load_silero)
            stack.callback(ctx.pool.stop)
            ctx.pool.start()
            ctx.batcher = LoopBatcher(ctx.pool)
            ctx.bulk_batcher = LoopBatcher(ctx.pool, bulk=True)
            ctx.ready = True
            metrics.build.info({"version": app_version(), "backend": ctx.backend.name,
                                "model": ctx.backend.model})  # known once loaded (remote)
            metrics.backend_ready.labels(ctx.backend.name).set(1)
            log.info("server.ready", backend=ctx.backend.name, model=ctx.backend.model,
                     max_sessions=settings.max_sessions)
            stack.callback(install_signal_drain(ctx))
            # uvicorn hands its lifespan state to the connection protocols: they count their
            # refusals in this app's registry.
            yield {METRICS_STATE_KEY: metrics}
            ctx.ready = False
            metrics.backend_ready.labels(ctx.backend.name).set(0)

    app = FastAPI(title="sttd", version=app_version(), lifespan=lifespan)
    app.state.ctx = ctx
    http.attach(app)
    native_ws.attach(app)
    openai_ws.attach(app)
    deepgram_ws.attach(app)
    kaldi_gst.attach(app)
    batch.attach(app)
    web_ui.attach(app)
    return app


def app_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sttd")
    except PackageNotFoundError:
        return "dev"


def _queue_depths(ctx: ServerContext):
    jobs = [slot.job for slot in ctx.slots if slot.job is not None]
    yield "input", sum(j.input_depth for j in jobs)
    yield "output", sum(j.output_depth for j in jobs)
    yield "inference", ctx.pool.depth


def __getattr__(name: str) -> FastAPI:
    if name == "app":
        global app
        app = create_app()
        return app
    raise AttributeError(name)
