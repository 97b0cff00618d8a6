"""Where text post-processing plugs in: between a backend's hypothesis and the ``Partial`` /
``Final`` events. The recognizer calls a ``TextProcessor`` on every hypothesis text; word
lists keep the backend's words (their times and confidences belong to what was heard)."""

from __future__ import annotations

from typing import Protocol


class TextProcessor(Protocol):
    def __call__(self, text: str, *, final: bool) -> str: ...


def unchanged(text: str, *, final: bool) -> str:
    return text
