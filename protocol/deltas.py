"""Append-only text from revisable hypotheses (OpenAI's transcription deltas).

Partials may rewrite their tail; a delta, once sent, cannot be taken back. A word is sent when
two consecutive partials agree on it and on everything before it (LocalAgreement-2). At the
final, what remains is sent; should the final contradict words already out, the transcript
keeps them and continues with the final's words after the last one it shares, so the deltas
always concatenate to the completed transcript. A pure state machine, one per item.
"""

from __future__ import annotations

from difflib import SequenceMatcher


class AppendOnlyText:
    def __init__(self) -> None:
        self._sent: list[str] = []
        self._previous: list[str] | None = None
        self.contradicted = False  # the final disagreed with words already sent

    @property
    def sent(self) -> str:
        return " ".join(self._sent)

    def partial(self, text: str, settled: str = "") -> str:
        """The delta this partial makes safe to send ('' for none): its ``settled`` text when
        the backend says which is (the final begins with it), else what two agree on."""
        words = text.split()
        previous, self._previous = self._previous, words
        if settled.strip():
            fixed = settled.split()
            if fixed[:len(self._sent)] == self._sent:
                return self._send(fixed[len(self._sent):])
        if previous is None:
            return ""
        stable = 0
        for a, b in zip(previous, words, strict=False):
            if a != b:
                break
            stable += 1
        if stable <= len(self._sent) or words[:len(self._sent)] != self._sent:
            return ""
        return self._send(words[len(self._sent):stable])

    def final(self, text: str) -> tuple[str, str]:
        """(the last delta, the whole transcript) for the item's final text."""
        delta = self.settle(text)
        return delta, self.sent

    def settle(self, text: str) -> str:
        """The delta for text that is final as far as it goes (an item that spans several
        segments: each final settles the item's text so far)."""
        words = text.split()
        self._previous = words
        sent = self._sent
        if words[:len(sent)] == sent:
            rest = words[len(sent):]
        else:
            self.contradicted = True
            blocks = [b for b in SequenceMatcher(None, sent, words, autojunk=False)
                      .get_matching_blocks() if b.size]
            rest = words[blocks[-1].b + blocks[-1].size:] if blocks else words
        return self._send(rest)

    def _send(self, words: list[str]) -> str:
        if not words:
            return ""
        lead = " " if self._sent else ""
        self._sent.extend(words)
        return lead + " ".join(words)
