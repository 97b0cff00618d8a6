"""Hand-written fakes for unit tests (the edges we choose not to run for real)."""

from __future__ import annotations

import numpy as np

from backends.base import Hypothesis, Word


class ScriptedStream:
    """An ASRStream that 'recognises' one word per 100 ms of audio it was given."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.samples = 0
        self.finals = 0
        self.closed = False
        self.fail_on = fail_on

    def accept(self, pcm: np.ndarray) -> None:
        self.samples += pcm.size

    def _words(self) -> list[str]:
        return [f"w{i}" for i in range(self.samples // 1600)]

    def partial(self) -> Hypothesis | None:
        if self.fail_on == "partial":
            raise RuntimeError("boom")
        words = self._words()
        return Hypothesis(" ".join(words)) if words else None

    def finalize(self) -> Hypothesis:
        if self.fail_on == "final":
            from backends.base import BackendError

            raise BackendError("model exploded")
        words = self._words()
        self.samples = 0
        self.finals += 1
        return Hypothesis(
            " ".join(words),
            words=tuple(Word(w, i * 100, i * 100 + 90, 0.5) for i, w in enumerate(words)),
        )

    def close(self) -> None:
        self.closed = True


def speech(ms: int, amplitude: int = 3000) -> np.ndarray:
    n = 16 * ms
    return (np.sin(np.arange(n) * 2 * np.pi * 220 / 16000) * amplitude).astype(np.int16)


def silence(ms: int) -> np.ndarray:
    return np.zeros(16 * ms, dtype=np.int16)


def fail_finals(backend, error: Exception, when=lambda options: True) -> None:
    """Make ``backend``'s streams raise ``error`` from ``finalize`` (for the stream options
    ``when`` accepts): a backend failing at the edge we cannot break for real."""
    open_stream = backend.open_stream

    def opener(options):
        stream = open_stream(options)
        if when(options):
            def finalize():
                raise error

            stream.finalize = finalize
        return stream

    backend.open_stream = opener
