"""End of a speaker's turn: a pure, clock-free state machine beside the endpointer.

The endpointer ends *segments* after a short pause; a turn ends when the silence after the
last recognised word reaches ``turn_silence_ms`` (Deepgram's ``utterance_end_ms``), which is
usually longer. Time advances only through the audio position it is told; it is fed the
finals (where the words ended) and whether a segment is open (speech that may still bring
words). A turn with no words in it never ends: silence and noise alone announce nothing.
"""

from __future__ import annotations

from session.events import EndOfTurn, Final


class TurnDetector:
    def __init__(self, silence_ms: int | None) -> None:
        self.silence_ms = silence_ms
        self._last_word_end: int | None = None  # ms; None: no words since the last turn end

    def on_final(self, final: Final) -> None:
        if final.text:
            self._last_word_end = final.words[-1].end_ms if final.words else final.end_ms

    def advance(self, position_ms: int, in_speech: bool) -> EndOfTurn | None:
        """The turn's end, once, when ``position_ms`` of audio has been heard and no segment
        is open (an open one may still bring words: its final decides)."""
        if self.silence_ms is None or self._last_word_end is None or in_speech:
            return None
        silence = position_ms - self._last_word_end
        if silence < self.silence_ms:
            return None
        ended, self._last_word_end = self._last_word_end, None
        return EndOfTurn(ended, silence)

    def clear(self) -> None:
        self._last_word_end = None
