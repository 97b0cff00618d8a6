"""The text stage: the one place where recognised text is rewritten before it reaches the
encoders (numbers as digits today; replacements or a profanity filter would be further
rewriters in the same chain). The recognizer passes every hypothesis through the session's
``TextStage``: partials with their settled prefix, finals with their word list, so a rewrite
keeps text, words and times consistent. (KGS's external post-processor, ``STT_POSTPROCESSOR``,
runs after this stage, in the send pump: it is a process of the operator's with a deadline.)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from backends.base import Word
from session.options import RecognitionOptions


@dataclass(frozen=True, slots=True)
class Text:
    """A hypothesis's text. ``stable_chars``: the leading part of ``text`` that is settled
    (the final will begin with it); ``words``: a final's words with session-time stamps."""

    text: str
    words: tuple[Word, ...] = ()
    stable_chars: int = 0

    @property
    def stable_text(self) -> str:
        return self.text[: self.stable_chars]


class TextRewriter(Protocol):
    def __call__(self, text: Text, *, final: bool) -> Text:
        """Rewrite a partial (``final`` False: keep the settled prefix a prefix of every later
        rewrite) or a final (its words as well)."""


class TextStage:
    """The session's rewriters, applied in order; none: text passes through untouched."""

    def __init__(self, rewriters: tuple[TextRewriter, ...] = ()) -> None:
        self.rewriters = rewriters

    def __call__(self, text: Text, *, final: bool) -> Text:
        for rewrite in self.rewriters:
            text = rewrite(text, final=final)
        return text


UNCHANGED = TextStage()


def clamp_stable(text: Text) -> Text:
    """``stable_chars`` within the text and at a word boundary."""
    n = min(max(text.stable_chars, 0), len(text.text))
    while n and n < len(text.text) and _inside_a_word(text.text, n):
        n -= 1
    return text if n == text.stable_chars else replace(text, stable_chars=n)


def _inside_a_word(text: str, i: int) -> bool:
    return not text[i].isspace() and not text[i - 1].isspace()


def stage_for(options: RecognitionOptions) -> TextStage:
    """The rewriters a session's options ask for, in the order they apply."""
    rewriters: list[TextRewriter] = []
    if options.numerals:
        from session.numerals import numerals_for  # text2num: only sessions that ask

        numerals = numerals_for(options.language)
        if numerals is not None:
            rewriters.append(numerals)
    return TextStage(tuple(rewriters)) if rewriters else UNCHANGED
