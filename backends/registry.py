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
    import os

    from backends.whisper import WhisperBackend, WhisperOptions, bundled_model

    # CTranslate2 releases the GIL; one decode may use every core when it runs alone.
    threads = settings.whisper_cpu_threads or (os.cpu_count() or 1)
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
        )
    )
