"""Numbers as digits (inverse text normalisation) for sessions with ``numerals=true``.

The rewriting is text2num's (``alpha2digit``, Rust core): "twenty five" → "25",
"three point five" → "3.5", "the twenty first of May" → "the 21st of May", "one two three"
→ "1 2 3". This module traces the library's output back to the recognised words and keeps
a partial's settled prefix a prefix of every later rewrite:

- a final's words merged into one number keep the first one's start, the last one's end and
  the lowest confidence (None if any is unknown); punctuation stays on ("seventy-two," →
  "72,"). Words that do not spell the text, or output that cannot be traced back, leave the
  final as it was;
- a partial stays settled only up to the last word that can take no part in a number: a
  number, connector ("and", "point") or linking word ("is", "so") at the end may still grow;
- a scale word right after digits ("10 million", "$64 billion") is the model's own number
  and stays as written.

Threshold 3 (the library's default): a lone one, two, first, second stays a word ("this one",
"no one", "one of them", "wait a second"); numbers in a group ("one two three") and lone
numbers from three up are converted ("he came 3rd", "5 dollars", but "two kids"). Known
limits, left to the library:

- years spoken in pairs split: "nineteen eighty four" → "19 84";
- digit strings group oddly: "one zero zero zero one" → "1 0001"; "oh" is not zero (only the
  letter "o" next to a number is), so "nine oh two" → "9 oh two";
- linking words join lone numbers into a group: "this one is two" → "this 1 is 2";
- plurals and homographs read as numbers: "millions of people" → "1000000 of people",
  French "pour cent" → "pour 100"; "percent" stays a word.

Languages: text2num's (da, de, en, es, fr, it, nl, pt). A session's language "auto" is
rewritten as English: the embedded default model (tiny.en) is English-only, and a final's
detected language is not consulted, so partials and finals of a session always agree.
"""

from __future__ import annotations

import re
from functools import lru_cache
from itertools import accumulate

from text_to_num import alpha2digit, find_numbers

from backends.base import Word
from session.text import Text, clamp_stable

THRESHOLD = 3.0
# Per language: two, forty and four, to probe whether a word can join numbers (at a threshold
# where a lone "two" and "four" stay words, so that a group shows).
_PROBE_THRESHOLD = 10.0
_PROBES = {
    "da": ("to", "fyrre", "fire"),
    "de": ("zwei", "vierzig", "vier"),
    "en": ("two", "forty", "four"),
    "es": ("dos", "cuarenta", "cuatro"),
    "fr": ("deux", "quarante", "quatre"),
    "it": ("due", "quaranta", "quattro"),
    "nl": ("twee", "veertig", "vier"),
    "pt": ("dois", "quarenta", "quatro"),
}
LANGUAGES = frozenset(_PROBES)
# text2num's tokenizer: a word starts with a letter or digit and goes on with those, - and '.
_WORD = re.compile(r"[^\W_](?:[^\W_]|['-])*")
_CODE, _DECODE = str.maketrans("01", " \t"), str.maketrans(" \t", "01")
_GAP = re.compile(r"[ \t]+")
_MASK = "qx"  # a word that is no number in any of the languages


def numerals_for(language: str) -> Numerals | None:
    """The rewriter for a session's language ("auto": English), None where text2num has none."""
    tag = re.split(r"[-_]", language.strip().lower(), maxsplit=1)[0]
    tag = "en" if tag == "auto" else tag
    return Numerals(tag) if tag in LANGUAGES else None


class Numerals:
    """Spelled numbers → digits in one language; built once per session."""

    def __init__(self, language: str, threshold: float = THRESHOLD) -> None:
        if language not in LANGUAGES:
            raise ValueError(f"text2num has no numbers for language {language!r}")
        self.language = language
        self.threshold = threshold

    def __call__(self, text: Text, *, final: bool) -> Text:
        return self._final(text) if final else self._partial(text)

    def rewrite(self, tokens: list[str]) -> list[tuple[int, str]] | None:
        """``tokens`` (whitespace-free) rewritten, as (how many input tokens, output token)
        runs in order; None when the library's output cannot be traced back to the input."""
        # A scale word right after digits belongs to a number the model wrote itself ("10
        # million", "$64 billion"), which text2num would split ("10 1000000"): hide it.
        guarded = {i for i in range(1, len(tokens))
                   if tokens[i - 1][-1].isdigit() and self._starts_with_scale(tokens[i])}
        masked = [_WORD.sub(_MASK, t, count=1) if i in guarded else t
                  for i, t in enumerate(tokens)]
        runs = self._runs(masked)
        if runs is None or not guarded:
            return runs
        out = []
        for i, (n, piece) in _indexed(runs):
            if i in guarded and (n, piece) != (1, masked[i]):
                return None
            out.append((n, tokens[i] if i in guarded else piece))
        return out

    def _runs(self, tokens: list[str]) -> list[tuple[int, str]] | None:
        if not tokens:
            return []
        # Each gap is written as its index in spaces and tabs: the library treats any blank
        # run alike, keeps the gaps outside numbers and drops those inside, so the surviving
        # codes say which tokens each number merged.
        width = max(1, (len(tokens) - 2).bit_length())
        coded = tokens[0] + "".join(format(i, f"0{width}b").translate(_CODE) + token
                                    for i, token in enumerate(tokens[1:]))
        out = alpha2digit(coded, self.language, self.threshold)
        pieces, gaps = _GAP.split(out), _GAP.findall(out)
        runs, start = [], 0
        for piece, gap in zip(pieces, [*gaps, None], strict=True):
            if gap is not None and len(gap) != width:
                return None
            end = len(tokens) if gap is None else int(gap.translate(_DECODE), 2) + 1
            if not piece or end <= start:
                return None
            runs.append((end - start, piece))
            start = end
        return runs if start == len(tokens) else None

    def _final(self, text: Text) -> Text:
        tokens = text.text.split()
        runs = self.rewrite(tokens)
        if runs is None or _unchanged(runs, tokens):
            return text
        rewritten = " ".join(out for _, out in runs)
        if not text.words:
            return Text(rewritten)
        counts = _words_per_token(text.words, tokens)
        if counts is None:
            return text  # words that do not spell the text: merged numbers would have no place
        starts = list(accumulate(counts, initial=0))
        words: list[Word] = []
        for i, (n, out) in _indexed(runs):
            group = text.words[starts[i]: starts[i + n]]
            if n == 1 and out == tokens[i]:
                words += group  # as the backend split it ("cold", "-hearted")
                continue
            lead = group[0].word[: len(group[0].word) - len(group[0].word.lstrip())]
            confidences = [w.confidence for w in group]
            # A number is as sure as its least sure word, and unknown if any of them is.
            confidence = None if None in confidences else min(confidences)
            words.append(Word(lead + out, group[0].start_ms, group[-1].end_ms, confidence))
        return Text(rewritten, tuple(words))

    def _partial(self, text: Text) -> Text:
        tokens = text.text.split()
        runs = self.rewrite(tokens)
        if runs is None:
            return Text(text.text)  # nothing settled: no promise a later rewrite could break
        settled = clamp_stable(text).stable_text.split()
        n = len(settled) if settled == tokens[: len(settled)] else 0
        # Only what precedes a word that can never be part of a number is settled: "I owe you
        # twenty" may go on "five dollars", and "one," may become "1, 2, 3".
        while n and not self._ends_with_breaker(tokens[n - 1]):
            n -= 1
        out = [piece for _, piece in runs]
        prefix = [piece for _, piece in self.rewrite(tokens[:n]) or ()]
        if out[: len(prefix)] != prefix:
            prefix = []
        return Text(" ".join(out), stable_chars=len(" ".join(prefix)))

    def _ends_with_breaker(self, token: str) -> bool:
        words = _WORD.findall(token)
        return bool(words) and _breaker(self.language, words[-1].lower())

    def _starts_with_scale(self, token: str) -> bool:
        word = _WORD.search(token)
        return word is not None and _scale(self.language, word.group().lower())


@lru_cache(maxsize=8192)
def _breaker(language: str, word: str) -> bool:
    """Whether ``word`` ends any number before it and starts none: not a number word itself,
    nor a connector ("and", "point", "y") or a linking word ("is", "so") that text2num lets
    join numbers."""
    two, forty, four = _PROBES[language]
    t = _PROBE_THRESHOLD
    return not find_numbers([_Token(word)], language, 0.0) and all(
        alpha2digit(f"{head} {word} {four}", language, t)
        == f"{alpha2digit(head, language, t)} {word} {four}"
        for head in (two, forty)
    )


@lru_cache(maxsize=8192)
def _scale(language: str, word: str) -> bool:
    """Whether ``word`` alone is a power of ten from 100 ("hundred", "million", "mil")."""
    found = find_numbers([_Token(word)], language, 0.0)
    return len(found) == 1 and re.fullmatch(r"10{2,}", found[0].text) is not None


class _Token:
    """One word for ``find_numbers`` (text2num's ``Token`` protocol)."""

    def __init__(self, word: str) -> None:
        self.word = word

    def text(self) -> str:
        return self.word

    def nt_separated(self, previous: _Token) -> bool:
        return False

    def not_a_number_part(self) -> bool:
        return False


def _words_per_token(words: tuple[Word, ...], tokens: list[str]) -> list[int] | None:
    """How many of ``words`` spell each token (a backend may split one: "105", "%"); None
    when they do not spell the tokens."""
    counts, i = [], 0
    for token in tokens:
        spelled, start = "", i
        while i < len(words) and len(spelled) < len(token):
            spelled += words[i].word.strip()
            i += 1
        if spelled != token:
            return None
        counts.append(i - start)
    return counts if i == len(words) else None


def _indexed(runs: list[tuple[int, str]]):
    """Each run with the index of its first input token."""
    i = 0
    for run in runs:
        yield i, run
        i += run[0]


def _unchanged(runs: list[tuple[int, str]], tokens: list[str]) -> bool:
    return len(runs) == len(tokens) and all(
        out == token for (_, out), token in zip(runs, tokens, strict=True))
