"""What a client may choose about its recognition, validated at the edge by each protocol's
parser and carried to the inference thread unchanged (at the handshake, or mid-session in a
``Configure``).

Every field is optional: ``None`` means the server's setting. ``RecognitionOptions.merge``
gives partial-update semantics (OpenAI's ``session.update``): only the fields named change.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class RecognitionOptions:
    language: str = "auto"
    hotwords: tuple[str, ...] = ()
    n_best: int = 1
    vad: str | None = None  # "energy" | "silero"; None: the server default
    # Voice detection sensitivity in the detector's own units (energy: int16 RMS), or as a
    # 0..1 probability-like level that each detector maps onto its scale (OpenAI's threshold).
    vad_threshold: int | None = None
    vad_level: float | None = None
    vad_silence_ms: int | None = None  # silence that ends a segment
    preroll_ms: int | None = None  # audio kept from before speech (OpenAI prefix_padding_ms)
    max_segment_ms: int | None = None
    partial_ms: int | None = None
    partials: bool = True
    # False: silence never ends a segment; only the client's commit (or max_segment) does.
    endpointing: bool = True
    # Silence after the last recognised word that ends the speaker's turn (an ``EndOfTurn``
    # event, Deepgram's UtteranceEnd); None: no turn events.
    turn_silence_ms: int | None = None
    # The turn's words move the decision between these (``session.turns``): a finished
    # sentence ends the turn after the min, words that trail off wait for the max.
    turn_min_silence_ms: int | None = None
    turn_max_silence_ms: int | None = None
    numerals: bool = False  # numbers as digits ("seventy two" → "72")
    context: str = ""  # earlier text as decoding context (protocol/adaptation.py)

    def merge(self, **changes: Any) -> RecognitionOptions:
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise TypeError(f"unknown recognition options: {sorted(unknown)}")
        return replace(self, **changes)

    def stream_key(self) -> tuple:
        """The options a backend stream is opened with: changing one reopens the stream."""
        return (self.language, self.hotwords, self.n_best, self.vad, self.context)
