"""Admission control: a fixed number of session slots, taken at the handshake."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(eq=False)
class Slot:
    """One admitted session; ``job`` is set once its inference job exists (for metrics),
    ``drain`` by sessions that can finish early when the server shuts down."""

    job: Any = None
    drain: Callable[[], None] | None = None
    streaming: bool = False  # a response streams on: it releases the slot itself


class SessionSlots:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._live: set[Slot] = set()
        self._emptied: list[asyncio.Future] = []
        self._watchers: list[Callable[[], None]] = []
        self.released = 0  # sessions and uploads that have ended (KGS's requests processed)

    def __len__(self) -> int:
        return len(self._live)

    def __iter__(self) -> Iterator[Slot]:
        return iter(list(self._live))

    @property
    def free(self) -> int:
        return self.limit - len(self._live)

    def try_take(self, session: Slot) -> bool:
        if len(self._live) >= self.limit:
            return False
        self._live.add(session)
        self._changed()
        return True

    def release(self, session: Slot) -> None:
        if session not in self._live:
            return
        self._live.remove(session)
        self.released += 1
        self._changed()
        if not self._live:
            for waiter in self._emptied:
                if not waiter.done():
                    waiter.set_result(None)
            self._emptied.clear()

    def watch(self, on_change: Callable[[], None]) -> Callable[[], None]:
        """Call ``on_change`` (on the event loop) whenever a slot is taken or released;
        returns the function that stops it."""
        self._watchers.append(on_change)
        return lambda: self._watchers.remove(on_change)

    def _changed(self) -> None:
        for on_change in list(self._watchers):
            on_change()

    async def wait_until_empty(self) -> None:
        """Until every slot is released (the drain waits on this)."""
        if self._live:
            waiter = asyncio.get_running_loop().create_future()
            self._emptied.append(waiter)
            await waiter
