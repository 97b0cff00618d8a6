"""End of a speaker's turn: a pure, clock-free state machine beside the endpointer.

The endpointer ends *segments* after a short pause; a turn ends when the silence after the
last recognised speech is long enough for what was said (counted from where the endpointer
heard the speech end, not from the last word's time: Whisper's word ends come early). Time
advances only through the audio position it is told; it is fed the finals (where the words
ended, how the text ends) and whether a segment is open (speech that may still bring words).
A turn with no words in it never ends: silence and noise alone announce nothing.

How long is long enough comes from the last final's words (``turn_cue``), as a person hears
it: a sentence that ends ("…tomorrow at noon.") ends the turn after ``min_silence_ms``; one
that trails off (a trailing "and", "um", "to", a comma) waits ``max_silence_ms``; text that
says neither (a backend without punctuation) waits ``silence_ms``. With min = max = silence
this is the fixed-silence rule (Deepgram's ``utterance_end_ms``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from session.events import EndOfTurn, Final, FinalReason
from session.options import RecognitionOptions


class Cue(StrEnum):
    COMPLETE = "complete"  # the words end a sentence
    TRAILING = "trailing"  # the words lead on: more is coming
    NONE = "none"  # the words say neither


# Words a turn rarely ends on: conjunctions, fillers, prepositions, articles, and words that
# announce more. English only: for other languages only punctuation is a cue.
_TRAILING_EN = frozenset("""
and or but so because cause though although if then than that which who whose whom where when
while as like um uh erm er ah hmm mm the a an to of in on at for from with without about into
onto over under between by my your his her our their its this these those is are was were be
i i'm we you they he she it's there's let's well also plus just maybe actually basically
""".split())
_TERMINAL = frozenset(".?!。？！")
_LEADING_ON = frozenset(",;:-–—…")
_WORD = re.compile(r"[\w']+", re.UNICODE)


# Whisper ends nearly every segment with a period, a cut-off sentence too ("He was not."):
# it is only a cue when the model was sure of it and of the word before it (measured on cut
# and whole sentences in bench/turns.py).
SURE_END = 0.8
SURE_LAST_WORD = 0.5


def turn_cue(text: str, language: str | None = "en", *, end_confidence: float | None = None,
             last_word_confidence: float | None = None) -> Cue:
    """How the words of a final end, for deciding whether the turn is over."""
    text = text.rstrip().rstrip("\"')]»”’")
    if not text:
        return Cue.NONE
    words = _WORD.findall(text.lower())
    last = words[-1] if words else ""
    if (language or "en").split("-")[0] in ("en", "auto") and last in _TRAILING_EN:
        return Cue.TRAILING
    if text.endswith("...") or text[-1] in _LEADING_ON:
        return Cue.TRAILING
    if text[-1] in _TERMINAL:
        unsure = ((end_confidence is not None and end_confidence < SURE_END)
                  or (last_word_confidence is not None
                      and last_word_confidence < SURE_LAST_WORD))
        return Cue.NONE if unsure else Cue.COMPLETE
    return Cue.NONE


@dataclass(frozen=True, slots=True)
class TurnConfig:
    silence_ms: int  # no cue either way
    min_silence_ms: int | None = None  # after a complete sentence (None: silence_ms)
    max_silence_ms: int | None = None  # after words that trail off (None: silence_ms)
    language: str = "en"

    def wait_ms(self, cue: Cue) -> int:
        if cue is Cue.COMPLETE and self.min_silence_ms is not None:
            return self.min_silence_ms
        if cue is Cue.TRAILING and self.max_silence_ms is not None:
            return self.max_silence_ms
        return self.silence_ms

    @classmethod
    def of(cls, options: RecognitionOptions) -> TurnConfig | None:
        """The session's turn settings; None when it asked for no turn events."""
        if options.turn_silence_ms is None:
            return None
        language = options.language if options.language != "auto" else "en"
        return cls(options.turn_silence_ms, options.turn_min_silence_ms,
                   options.turn_max_silence_ms, language)

    @property
    def shortest_ms(self) -> int:
        return min(self.silence_ms, self.min_silence_ms or self.silence_ms)


class TurnDetector:
    def __init__(self, config: TurnConfig | None) -> None:
        self.config = config
        self._last_word_end: int | None = None  # ms; None: no words since the last turn end
        self._speech_end = 0  # ms: where the speech of the turn's last final ended
        self._cue = Cue.NONE
        self._segments: list[int] = []  # finals with words in the open turn

    def on_final(self, final: Final) -> None:
        if final.text:
            self._last_word_end = final.words[-1].end_ms if final.words else final.end_ms
            # Silence is counted from the end of speech the endpointer heard, when it heard
            # it: word times (Whisper's) tend to end early.
            self._speech_end = (max(final.end_ms, self._last_word_end)
                                if final.reason is FinalReason.ENDPOINT else self._last_word_end)
            self._cue = turn_cue(
                final.text, final.language or (self.config.language if self.config else None),
                end_confidence=final.end_confidence,
                last_word_confidence=final.words[-1].confidence if final.words else None)
            self._segments.append(final.segment_seq)

    def advance(self, position_ms: int, in_speech: bool) -> EndOfTurn | None:
        """The turn's end, once, when ``position_ms`` of audio has been heard and no segment
        is open (an open one may still bring words: its final decides)."""
        if self.config is None or self._last_word_end is None or in_speech:
            return None
        wait = self.config.wait_ms(self._cue)
        silence = position_ms - self._speech_end
        if silence < wait:
            return None
        turn = EndOfTurn(self._last_word_end, silence, segments=tuple(self._segments),
                         cue=self._cue.value, required_silence_ms=wait,
                         decided_at_ms=position_ms)
        self.clear()
        return turn

    def clear(self) -> None:
        self._last_word_end = None
        self._cue = Cue.NONE
        self._segments = []
