"""Process-wide state shared by the routers: built by ``create_app``, read by transports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backends.base import ASRBackend
from config import Settings
from inference.pool import InferencePool, LoopBatcher
from observability.metrics import Metrics
from transport.auth import Gate
from transport.capacity import SessionSlots


@dataclass
class ServerContext:
    settings: Settings
    backend: ASRBackend
    pool: InferencePool
    metrics: Metrics
    slots: SessionSlots
    gate: Gate
    batcher: LoopBatcher | None = None  # live sessions; created on the server's event loop
    bulk_batcher: LoopBatcher | None = None  # file uploads: the pool's bounded bulk share
    postprocessor: Any = None  # transport.postprocess.PostProcessor when configured
    ready: bool = field(default=False)
    draining: bool = field(default=False)  # SIGTERM seen: finishing sessions, admitting none
