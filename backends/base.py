"""The contract between sttd and a speech recogniser.

A backend is loaded once per process (``ASRBackend``) and hands out cheap per-session
``ASRStream`` objects. Streams are driven by one inference thread at a time, so they need no
locking of their own. Segmentation (VAD, endpointing) happens outside the backend: a stream
only hears the audio of the current segment and is told when it ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True, slots=True)
class Word:
    word: str
    start_ms: int  # relative to the start of the segment's audio
    end_ms: int
    confidence: float | None = None


@dataclass(frozen=True, slots=True)
class Alternative:
    text: str
    score: float


@dataclass(frozen=True, slots=True)
class Hypothesis:
    text: str
    words: tuple[Word, ...] = ()
    confidence: float | None = None
    language: str | None = None
    alternatives: tuple[Alternative, ...] = ()
    # Segment samples the hypothesis covers, when that is less than all accepted so far (a
    # partial decoded elsewhere while more audio came in); None = everything accepted.
    covered_samples: int | None = None
    # Partials: the leading part of ``text`` that is settled. The stream promises its final
    # for this segment begins with exactly this text (whitespace aside), so clients may render
    # it as done; 0: no promise (every word may still change).
    stable_chars: int = 0
    # Finals: how sure the model is of the punctuation mark that ends ``text`` (Whisper: that
    # token's probability), a cue for the end of a turn; None: not known (or no mark).
    end_confidence: float | None = None

    @property
    def empty(self) -> bool:
        return not self.text.strip()


EMPTY = Hypothesis(text="")


@dataclass(frozen=True, slots=True)
class Capabilities:
    partials: bool = True
    words: bool = False
    n_best: bool = False
    languages: tuple[str, ...] = ("*",)  # "*" = any language
    sample_rate: int = 16000
    # Pool threads the backend needs at least: a backend whose finals wait on a remote
    # engine (a GPU) holds one thread per final in flight.
    inference_threads: int = 0


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """Per-session recognition options, validated at the edge."""

    sample_rate: int = 16000
    language: str = "auto"
    hotwords: tuple[str, ...] = ()
    n_best: int = 1
    vad: str = "energy"  # the session's voice detector ("silero" already verified speech)
    # Text the speaker said before (a carried adaptation state): backends that take a prompt
    # decode with it as the preceding context (Whisper's initial_prompt); others ignore it.
    context: str = ""


class BackendError(Exception):
    """A recognition failure. ``retryable`` says whether the same call could succeed later."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@runtime_checkable
class ASRStream(Protocol):
    def accept(self, pcm: np.ndarray) -> None:
        """Append int16 mono audio at the backend's sample rate to the current segment."""

    def partial(self) -> Hypothesis | None:
        """Best guess for the segment so far; ``None`` when nothing new is worth sending."""

    def finalize(self) -> Hypothesis:
        """End the current segment and return its transcript; the stream then starts afresh."""

    def close(self) -> None:
        """Release per-session resources. Idempotent."""


@runtime_checkable
class NotifyingStream(Protocol):
    """An ``ASRStream`` whose partial decodes run elsewhere (a GPU engine): ``partial()`` starts
    one and returns what finished before it, and the stream calls ``wake`` (from any thread)
    when a result lands, so the session collects it at once rather than at its next audio."""

    def set_wake(self, wake: Callable[[], None]) -> None: ...

    @property
    def result_ready(self) -> bool:
        """A finished partial is waiting for ``partial()`` to collect it."""


@runtime_checkable
class PreparingStream(Protocol):
    """An ``ASRStream`` whose final can be decoded ahead, in the pause before the endpoint:
    ``prepare_final()`` decodes the segment's audio so far and keeps the result, which the
    next ``finalize()`` returns at once (audio accepted since is silence, by the caller's
    word, and is left out). ``forget_prepared()``: speech went on, the result is stale."""

    def prepare_final(self) -> None: ...

    def forget_prepared(self) -> None: ...


@runtime_checkable
class HealthChecked(Protocol):
    """A backend with a live engine to probe (``/ready`` asks it); raises when unhealthy."""

    async def check_health(self) -> None: ...


DecodeObserver = Callable[[str, str, float], None]  # kind, outcome, seconds


@runtime_checkable
class EngineBacked(Protocol):
    """A backend whose decodes run on an engine elsewhere (a GPU): the server counts them."""

    on_decode: DecodeObserver  # set by the server; called as each decode ends, any thread

    @property
    def decodes_in_flight(self) -> int: ...


@runtime_checkable
class ASRBackend(Protocol):
    name: str
    model: str
    capabilities: Capabilities

    def load(self) -> None:
        """Load weights; called once, off the event loop, before the server is ready."""

    def open_stream(self, options: StreamOptions) -> ASRStream:
        """A new per-session stream. Raises ``BackendError`` for unsupported options."""

    @property
    def open_streams(self) -> int:
        """Streams opened and not yet closed (for leak checks and metrics)."""

    def close(self) -> None:
        """Release the model. Idempotent."""


_waiting = threading.local()


def set_waiting_hook(hook: Callable[[], None] | None) -> None:
    """Installed by whatever runs backends on this thread (the inference pool)."""
    _waiting.hook = hook


def before_waiting() -> None:
    """A backend calls this on its thread just before it blocks on work done elsewhere (a
    GPU decode), so the runner can hand its other queued work to other threads meanwhile."""
    hook = getattr(_waiting, "hook", None)
    if hook is not None:
        hook()
