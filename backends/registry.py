"""Backend names → factories. Heavy backends are imported only when chosen."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from backends.base import ASRBackend
from config import Settings

# name → "module:function" building the backend from settings.
_FACTORIES: dict[str, str] = {
    "kaldi": "backends.registry:_kaldi",
    "mock": "backends.registry:_mock",
    "qwen3": "backends.registry:_qwen3",
    "whisper": "backends.registry:_whisper",
}


def available() -> list[str]:
    return sorted(_FACTORIES)


def create_backend(settings: Settings) -> ASRBackend:
    try:
        target = _FACTORIES[settings.backend]
    except KeyError:
        raise ValueError(
            f"unknown backend {settings.backend!r}; choose one of {', '.join(available())}"
        ) from None
    module, _, func = target.partition(":")
    factory: Callable[[Settings], ASRBackend] = getattr(importlib.import_module(module), func)
    backend = factory(settings)
    if not isinstance(backend, ASRBackend):
        raise TypeError(f"{target} did not return an ASRBackend")
    return backend


def _mock(settings: Settings) -> ASRBackend:
    from backends.mock import MockBackend

    return MockBackend(settings.mock_fixtures, delay_ms=settings.mock_delay_ms,
                       tolerant=settings.mock_tolerant)


def _kaldi(settings: Settings) -> ASRBackend:
    from backends.kaldi import KaldiBackend, bundled_model

    path = str(settings.kaldi_model_path) if settings.kaldi_model_path else bundled_model()
    return KaldiBackend(path, pool_size=settings.kaldi_pool_size)


def _whisper(settings: Settings) -> ASRBackend:
    from backends.whisper import WhisperBackend, WhisperOptions, bundled_model, usable_cores

    # One CTranslate2 thread per decode, and as many decodes at once as inference threads:
    # tiny.en's matrices are too small to share between cores (one decode on two threads is
    # slower than on one), and two decodes of two threads each on two cores fight for them.
    threads = settings.whisper_cpu_threads or max(
        1, usable_cores() // settings.inference_threads)
    return WhisperBackend(
        WhisperOptions(
            model=settings.whisper_model or bundled_model(),
            device=settings.whisper_device,
            compute_type=settings.whisper_compute_type,
            beam_size=settings.whisper_beam_size,
            cpu_threads=threads,
            num_workers=settings.inference_threads,
            no_speech_threshold=settings.whisper_no_speech_threshold,
            log_prob_threshold=settings.whisper_log_prob_threshold,
            compression_ratio_threshold=settings.whisper_compression_ratio_threshold,
            speech_gate=settings.whisper_speech_gate,
            settle_agree=settings.whisper_settle_agree,
            settle_margin_s=settings.whisper_settle_margin_sec,
        )
    )


def _qwen3(settings: Settings) -> ASRBackend:
    from dataclasses import replace

    from backends.qwen3 import Qwen3Backend, Qwen3Options, check_model_len, decode_tokens

    options = Qwen3Options(
        tick_sec=settings.qwen3_tick_sec,
        unfixed_ticks=settings.qwen3_unfixed_ticks,
        rollback_tokens=settings.qwen3_rollback_tokens,
        max_segment_sec=settings.qwen3_max_segment_sec,
        max_tokens=settings.qwen3_max_tokens,
        final_timeout_sec=settings.qwen3_final_timeout_sec,
        final_concurrency=settings.qwen3_final_concurrency,
        warmup=settings.qwen3_warmup,
    )
    check_model_len(settings.qwen3_max_model_len, options)
    options = replace(options, max_context_tokens=settings.qwen3_max_model_len
                      - decode_tokens(options))
    if settings.job_timeout_sec and settings.qwen3_final_timeout_sec >= settings.job_timeout_sec:
        raise ValueError(  # else the watchdog writes off threads that would have timed out
            f"STT_QWEN3_FINAL_TIMEOUT_SEC ({settings.qwen3_final_timeout_sec:g}) must be below "
            f"STT_JOB_TIMEOUT_SEC ({settings.job_timeout_sec:g})")
    if settings.qwen3_remote_url:
        from backends.qwen3_remote import RemoteEngine

        engine = RemoteEngine(
            settings.qwen3_remote_url, api_key=settings.qwen3_remote_api_key,
            model=settings.qwen3_remote_model, tokenizer=_qwen3_tokenizer(settings),
            connections=settings.qwen3_final_concurrency + settings.max_sessions,
        )
        return Qwen3Backend(engine, settings.qwen3_remote_model or settings.qwen3_remote_url,
                            options)
    if not settings.qwen3_model:
        raise ValueError("the qwen3 backend needs STT_QWEN3_MODEL (a model directory) or "
                         "STT_QWEN3_REMOTE_URL (a vllm serve of Qwen3-ASR)")
    from backends.qwen3_vllm import VllmEngine, VllmSettings

    engine = VllmEngine(VllmSettings(
        model=settings.qwen3_model,
        dtype=settings.qwen3_dtype,
        gpu_memory_utilization=settings.qwen3_gpu_memory_utilization,
        max_model_len=settings.qwen3_max_model_len,
        max_num_seqs=settings.qwen3_max_num_seqs,
        max_num_batched_tokens=settings.qwen3_max_num_batched_tokens,
        enforce_eager=settings.qwen3_enforce_eager,
        load_format=settings.qwen3_load_format,
    ))
    from pathlib import Path

    return Qwen3Backend(engine, Path(settings.qwen3_model).name or settings.qwen3_model, options)


def _qwen3_tokenizer(settings: Settings) -> str | None:
    """tokenizer.json for remote mode: set explicitly, or found in the model directory."""
    if settings.qwen3_tokenizer:
        return str(settings.qwen3_tokenizer)
    if settings.qwen3_model:
        from pathlib import Path

        candidate = Path(settings.qwen3_model) / "tokenizer.json"
        if candidate.is_file():
            return str(candidate)
    return None
