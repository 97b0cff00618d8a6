"""Joining the transcripts of a segment cut at ``max_segment_ms`` and the next one, which
replays the audio just before the cut: the next segment's words that repeat the end of the
previous final are dropped (pure functions).

The previous final has already been sent, so it stands as it is; the repeat is found by a
semi-global alignment of the previous final's last words (a suffix, free where it starts)
against the next segment's first words (a prefix, free where it ends), on normalised words
(lower case, punctuation stripped). A word cut in two at the cut ("impres" / "impressions")
aligns as a partial match. Only words timed inside the replayed audio take part, so a word
said twice on purpose further on is never taken for a repeat.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from backends.base import Word
from backends.stable import normalise

# Word times are the aligner's guesses (Whisper's cross-attention): a word this close to the
# replayed audio may still be in it.
SLACK_MS = 300
END_SLACK_MS = 150  # word ends are steadier than starts
# How long a word can last, by its letters (a digit, a spoken number, counts as three): a
# decoder that stopped early has the aligner stretch its last word over what it left out.
WORD_BASE_MS, LETTER_MS = 300, 100
_MATCH, _PARTIAL, _MISMATCH, _GAP = 2, 1, -1, -1
_TOKEN = re.compile(r"\S+")


def said_until(word: Word) -> int:
    """Where ``word`` really ends: no later than the longest it could last."""
    letters = sum(3 if c.isdigit() else 1 for c in normalise(word.word))
    return min(word.end_ms, word.start_ms + WORD_BASE_MS + LETTER_MS * letters)


def _score(a: str, b: str) -> int:
    if a == b:
        return _MATCH if a else _MISMATCH
    short, long = sorted((a, b), key=len)
    if len(short) >= 2 and (long.startswith(short) or long.endswith(short)):
        return _PARTIAL  # one side heard only part of the word at the cut
    return _MISMATCH


def repeated_prefix(previous: Sequence[str], following: Sequence[str]) -> int:
    """How many leading words of ``following`` repeat the end of ``previous``: where the best
    alignment of a suffix of ``previous`` (to its last word) with a prefix of ``following``
    ends; 0 when no alignment scores above zero (nothing in common)."""
    a = [normalise(w) for w in previous]
    b = [normalise(w) for w in following]
    # row[j]: best score of some suffix of a[:i] against b[:j]; skipping a's start is free.
    row = [_GAP * j for j in range(len(b) + 1)]
    for i in range(1, len(a) + 1):
        new = [0]
        for j in range(1, len(b) + 1):
            new.append(max(row[j - 1] + _score(a[i - 1], b[j - 1]),
                           row[j] + _GAP, new[j - 1] + _GAP))
        row = new
    if not a:
        return 0
    best = max(range(len(b) + 1), key=lambda j: (row[j], -j))  # ties: drop the fewest
    return best if row[best] > 0 else 0


@dataclass(frozen=True, slots=True)
class Seam:
    """Where two segments overlap: the previous final's words (session ms) and the audio
    both heard, ``replay_ms`` (the next segment's start) to ``cut_ms`` (the previous end)."""

    words: tuple[Word, ...]
    replay_ms: int
    cut_ms: int

    @property
    def tail(self) -> tuple[Word, ...]:
        """The previous words that may be in the replayed audio."""
        return tuple(w for w in self.words if w.end_ms > self.replay_ms - SLACK_MS)


def merge_words(seam: Seam, following: Sequence[Word]) -> tuple[Word, ...]:
    """The next segment's words (session ms) less those that repeat the previous final."""
    tail = seam.tail
    if not tail:
        return tuple(following)  # the previous final says nothing in the replayed audio
    replayed_until = max(seam.cut_ms, tail[-1].end_ms) + SLACK_MS
    n = 0
    while n < len(following) and following[n].start_ms < replayed_until:
        n += 1
    drop = repeated_prefix([w.word for w in tail], [w.word for w in following[:n]])
    if not drop:  # nothing in common: only what time puts inside the previous last word
        last = tail[-1]
        start, end = last.start_ms - END_SLACK_MS, said_until(last) + END_SLACK_MS
        while drop < n and start <= following[drop].start_ms and following[drop].end_ms <= end:
            drop += 1
    return tuple(following[drop:])


def merge_text(seam: Seam, text: str, words: Sequence[Word]) -> tuple[str, tuple[Word, ...]]:
    """A next final's text and words less the repeat; without word times, by text alone."""
    if not words:
        return trim_text(seam, text)[0], ()
    kept = merge_words(seam, words)
    dropped = len(words) - len(kept)
    if not dropped:
        return text, kept
    if len(text.split()) == len(words):  # the text is its words: cut it in place
        return drop_words(text, dropped)[0], kept
    return " ".join(w.word for w in kept), kept


def trim_text(seam: Seam, text: str) -> tuple[str, int]:
    """``text`` (a partial, or a final without word times) less its leading words that
    repeat the previous final, and how many characters went."""
    tail = [w.word for w in seam.tail]
    if not tail:
        return text, 0
    head = text.split()[: len(tail) + 4]  # a repeat is about as long as the tail
    return drop_words(text, repeated_prefix(tail, head))


def drop_words(text: str, n: int) -> tuple[str, int]:
    """``text`` without its first ``n`` whitespace-separated words (and the space after)."""
    if n <= 0:
        return text, 0
    tokens = list(_TOKEN.finditer(text))
    if n >= len(tokens):
        return "", len(text)
    cut = tokens[n].start()
    return text[cut:], cut
