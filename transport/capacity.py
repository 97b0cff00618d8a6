"""Admission control: a fixed number of session slots, taken at the handshake."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class SessionSlots:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._live: set[Any] = set()

    def __len__(self) -> int:
        return len(self._live)

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._live))

    @property
    def free(self) -> int:
        return self.limit - len(self._live)

    def try_take(self, session: Any) -> bool:
        if len(self._live) >= self.limit:
            return False
        self._live.add(session)
        return True

    def release(self, session: Any) -> None:
        self._live.discard(session)
