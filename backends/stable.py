"""Settled words: the leading words of a partial that its segment's final will begin with.

A streaming decoder revises its tail as audio comes in; a client rendering partials wants to
know which words are done (the RTE's ``intermed``). ``Settler`` settles a word when two
consecutive decodes agree on it and on everything before it (LocalAgreement-2, as
Whisper-Streaming commits), and never takes a settled word back: a later decode that disagrees
is shown after the settled words, from where it re-joins them. ``keep_promise`` makes the
segment's final begin with the settled words, whatever the final decode said: the promise is
binding, and what keeping it cost is counted (``Kept.revised``) so it can be measured.

Words are compared case- and punctuation-blind: "hello" settled in a partial is kept by a
final that says "Hello,", in the final's spelling (its punctuation and casing are better).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from difflib import SequenceMatcher

from backends.base import Hypothesis, Word

_WORD = re.compile(r"\w+")


def normalise(word: str) -> str:
    return "".join(_WORD.findall(word.lower()))


def shared_prefix(a: list[str], b: list[str]) -> int:
    """How many leading words ``a`` and ``b`` share (normalised)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if normalise(x) != normalise(y):
            break
        n += 1
    return n


def rejoin(settled: list[str], words: list[str]) -> int:
    """Where ``settled`` ends in ``words`` (a decode that may disagree with it): the ``j``
    whose ``words[:j]`` is nearest to ``settled`` in word edits (a semi-global alignment; of
    equally near ones, the one nearest ``len(settled)``)."""
    n = shared_prefix(settled, words)
    if n == len(settled):
        return n
    a = [normalise(w) for w in settled]
    b = [normalise(w) for w in words]
    row = list(range(len(b) + 1))  # edits between a[:i] and b[:j], row by row
    for i, x in enumerate(a, 1):
        prev, row = row, [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (x != y))
    return min(range(len(b) + 1), key=lambda j: (row[j], abs(j - len(a))))


class Settler:
    """One segment's settled words, from its successive partial decodes."""

    def __init__(self, agree: int = 2, hold_back: int = 0) -> None:
        self._agree = agree  # consecutive decodes that must agree on a word; 0: none settles
        # Words at the end of a decode that never settle, however often decodes agree (the
        # audio's edge, where a decoder cuts or invents words).
        self._hold_back = hold_back
        self.settled: list[str] = []
        self._tails: list[list[str]] = []  # earlier decodes' words after the settled ones

    def update(self, words: list[str], settleable: int | None = None) -> Hypothesis | None:
        """Take a decode's words; the partial to show (settled words first), or None when
        there is nothing to show. ``settleable``: how many of the leading words may settle at
        all (those that end well before the audio does, where the decoder knows it)."""
        start = rejoin(self.settled, words)
        tail = words[start:]
        self._tails = [*self._tails, tail][-max(1, self._agree):]
        if self._agree and len(self._tails) == self._agree:
            agreed = min(shared_prefix(t, tail) for t in self._tails)
            agreed = min(agreed, max(0, len(tail) - self._hold_back))
            if settleable is not None:
                agreed = min(agreed, max(0, settleable - start))
            if agreed:
                self.settled += tail[:agreed]
                self._tails = [t[agreed:] for t in self._tails]
                tail = tail[agreed:]
        shown = self.settled + tail
        if not shown:
            return None
        return Hypothesis(" ".join(shown), stable_chars=len(" ".join(self.settled)))

    def candidates(self, words: list[str]) -> int:
        """How many of ``words`` would settle if ``update`` took them with no ``settleable``
        limit: 0 means it is not worth working out which may (a word alignment)."""
        if not self._agree or len(self._tails) + 1 < self._agree:
            return 0
        tail = words[rejoin(self.settled, words):]
        agreed = min(shared_prefix(t, tail) for t in [*self._tails, tail][-self._agree:])
        return min(agreed, max(0, len(tail) - self._hold_back))

    def commit(self, words: list[str]) -> None:
        """Settle words known to be final (a decoder's finished piece), ahead of agreement."""
        n = len(self.settled)
        if shared_prefix(self.settled, words) == n and len(words) > n:
            self.settled = list(words)
            self._tails = []

    def reset(self) -> None:
        self.settled, self._tails = [], []

    @property
    def text(self) -> str:
        return " ".join(self.settled)


@dataclass(frozen=True, slots=True)
class Kept:
    hypothesis: Hypothesis
    revised: int  # settled words the backend's own final had changed or dropped


def keep_promise(final: Hypothesis, settled: list[str]) -> Kept:
    """``final`` beginning with the ``settled`` words (case and punctuation aside: the final's
    own "Hello," keeps the promise of a settled "hello"). Where the final says other words,
    its words up to where it re-joins the settled ones are replaced: a word both said stays
    as the final has it; a word the final said otherwise is the settled one, timed over what
    it said there, with no confidence (the model did not say it)."""
    if not settled:
        return Kept(final, 0)
    words = final.text.split()
    if shared_prefix(settled, words) == len(settled):
        return Kept(final, 0)
    cut = rejoin(settled, words)
    ops = SequenceMatcher(None, [normalise(w) for w in settled],
                          [normalise(w) for w in words[:cut]], autojunk=False).get_opcodes()
    matched = sum(i2 - i1 for tag, i1, i2, _, _ in ops if tag == "equal")
    timed: tuple[Word, ...] = ()
    if len(final.words) == len(words):  # one timed word per text word: the times can follow
        timed = _retimed(settled, final.words, ops) + final.words[cut:]
    alternatives = tuple(replace(a, text=_spliced(settled, a.text)) for a in final.alternatives)
    return Kept(replace(final, text=_spliced(settled, final.text), words=timed,
                        alternatives=alternatives), len(settled) - matched)


def _spliced(settled: list[str], text: str) -> str:
    words = text.split()
    cut = rejoin(settled, words)
    ops = SequenceMatcher(None, [normalise(w) for w in settled],
                          [normalise(w) for w in words[:cut]], autojunk=False).get_opcodes()
    out: list[str] = []
    for tag, i1, i2, j1, j2 in ops:
        if tag == "equal":
            out += words[j1:j2]
        elif tag in ("replace", "delete"):
            out += settled[i1:i2]
    return " ".join([*out, *words[cut:]])


def _retimed(settled: list[str], said: tuple[Word, ...], ops) -> tuple[Word, ...]:
    out: list[Word] = []
    for tag, i1, i2, j1, j2 in ops:
        if tag == "equal":
            out += said[j1:j2]
        elif tag in ("replace", "delete"):  # said otherwise, or not at all: spread over it
            if j2 > j1:
                start, end = said[j1].start_ms, said[j2 - 1].end_ms
            else:
                start = end = out[-1].end_ms if out else (said[j1].start_ms if j1 < len(
                    said) else 0)
            step = (end - start) / (i2 - i1)
            out += [Word(settled[i], round(start + k * step), round(start + (k + 1) * step))
                    for k, i in enumerate(range(i1, i2))]
        # "insert": words the final said that the settled text has not: dropped
    return tuple(out)
