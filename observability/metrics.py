"""Prometheus metrics in the server's own registry (one per app, so tests start from zero)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.4, 0.6, 0.8, 1.0,
                   1.5, 2.5, 5.0, 10.0)
INFERENCE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                     2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        r = self.registry
        self.active_sessions = Gauge(
            "stt_active_sessions", "WebSocket sessions open now.", registry=r
        )
        self.max_sessions = Gauge("stt_max_sessions", "Configured session capacity.", registry=r)
        self.build = Info("stt_build", "Server version, backend and model.", registry=r)
        self.backend_ready = Gauge(
            "stt_backend_ready", "1 when the backend is loaded and serving.", ["backend"],
            registry=r,
        )
        self.sessions = Counter(
            "stt_sessions_total", "Sessions ended, by outcome.", ["outcome"], registry=r
        )
        self.sessions_opened = Counter(
            "stt_sessions_opened_total", "Sessions admitted (streams and uploads), by wire "
            "protocol.", ["protocol"], registry=r,
        )
        self.postprocess_time = Histogram(
            "stt_postprocess_seconds", "External post-processor time per final, queueing "
            "included (successful rewrites).", registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.postprocess_failures = Counter(
            "stt_postprocess_failures_total", "Finals sent unprocessed because the external "
            "post-processor timed out or failed, by reason.", ["reason"], registry=r,
        )
        self.batch_requests = Counter(
            "stt_batch_requests_total", "File transcription requests (every batch endpoint), "
            "by HTTP status.", ["status"], registry=r,
        )
        self.rejections = Counter(
            "stt_rejections_total", "Handshakes refused, by reason.", ["reason"], registry=r
        )
        self.errors = Counter(
            "stt_errors_total", "Error messages sent to clients, by code.", ["code"], registry=r
        )
        self.audio_received = Counter(
            "stt_audio_received_seconds_total", "Audio accepted from clients.", registry=r
        )
        self.audio_processed = Counter(
            "stt_audio_processed_seconds_total", "Audio run through VAD and the backend.",
            registry=r,
        )
        self.audio_dropped = Counter(
            "stt_audio_dropped_seconds_total", "Accepted audio shed, by reason.", ["reason"],
            registry=r,
        )
        self.connections_refused = Counter(
            "stt_connections_refused_total",
            "Connections refused below the app (transport/connection.py), by reason.",
            ["reason"], registry=r,
        )
        self.ingest_held = Counter(
            "stt_ingest_held_seconds_total",
            "Time sessions' sockets went unread because their clients sent faster than real "
            "time and their buffers were full (backpressure, nothing shed).",
            registry=r,
        )
        self.draining = Gauge(
            "stt_draining", "1 while the server is shutting down (finishing sessions).",
            registry=r,
        )
        self.errors_timed_out = Counter(
            "stt_inference_timeouts_total",
            "Backend calls the watchdog gave up on (the session failed, the thread replaced).",
            registry=r,
        )
        self.partials_dropped = Counter(
            "stt_partials_dropped_total", "Partials shed because the client reads slowly.",
            registry=r,
        )
        self.segments = Counter(
            "stt_segments_total", "Finals sent, by reason.", ["reason"], registry=r
        )
        self.first_partial_latency = Histogram(
            "stt_first_partial_latency_seconds",
            "Speech start seen → first text of the segment produced.",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.final_latency = Histogram(
            "stt_final_latency_seconds", "Segment end seen → final produced.",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.inference_time = Histogram(
            "stt_inference_seconds", "Backend call time; _sum over audio seconds is the RTF.",
            ["backend", "kind"],
            buckets=INFERENCE_BUCKETS, registry=r,
        )

        self.early_finals = Counter(
            "stt_early_finals_total", "Finals decoded ahead in a pause: used at the endpoint, "
            "or wasted when speech resumed.", ["backend", "outcome"], registry=r,
        )

        # GPU engines (Qwen3-ASR): the decode itself, apart from the inference-thread call.
        self.engine_decode_time = Histogram(
            "stt_engine_decode_seconds",
            "GPU engine decodes, submitted → answered (waiting in the engine included).",
            ["kind"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.engine_decodes = Counter(
            "stt_engine_decodes_total", "GPU engine decodes by kind and outcome.",
            ["kind", "outcome"], registry=r,
        )
        self.engine_in_flight = Gauge(
            "stt_engine_decodes_in_flight", "Decodes submitted to the GPU engine, unanswered.",
            registry=r,
        )
        for kind in ("partial", "final"):
            self.engine_decode_time.labels(kind)
            for outcome in ("ok", "aborted", "failed", "timeout"):
                self.engine_decodes.labels(kind, outcome)

    def observe_decode(self, kind: str, outcome: str, seconds: float) -> None:
        """Thread-safe; called from the engine thread as each decode ends."""
        self.engine_decodes.labels(kind, outcome).inc()
        if outcome == "ok":
            self.engine_decode_time.labels(kind).observe(seconds)

    def preset(self, labels: dict[Counter, Iterable[str]]) -> None:
        """Create each known label value at 0, so dashboards and alerts see a series (and a
        rate of 0) before the first event, not an absent one."""
        for counter, values in labels.items():
            for value in values:
                counter.labels(value)

    def watch_queues(self, depths: Callable[[], Iterable[tuple[str, int]]]) -> None:
        """Report queue depths computed at scrape time (no per-frame bookkeeping)."""
        self.registry.register(_QueueDepthCollector(depths))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _QueueDepthCollector:
    def __init__(self, depths: Callable[[], Iterable[tuple[str, int]]]) -> None:
        self._depths = depths

    def collect(self):
        family = GaugeMetricFamily(
            "stt_queue_depth", "Items waiting, summed over sessions.", labels=["queue"]
        )
        for queue, depth in self._depths():
            family.add_metric([queue], depth)
        yield family

    def describe(self):
        return [GaugeMetricFamily("stt_queue_depth", "Items waiting.", labels=["queue"])]


def scraped_samples(text: str) -> dict[str, float]:
    """A scrape of ``/metrics`` read back (tests, benchmarks): samples keyed
    ``name{label="v",...}``, labels sorted."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out
