"""Backend names → factories. Heavy backends are imported only when chosen."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from backends.base import ASRBackend
from config import Settings

# name → "module:function" building the backend from settings.
_FACTORIES: dict[str, str] = {
    "mock": "backends.registry:_mock",
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

    return MockBackend(settings.mock_fixtures, delay_ms=settings.mock_delay_ms)
