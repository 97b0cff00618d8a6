"""Settled words on the wire: a real Whisper server, real speech at real-time pace.

A partial's ``stable_text`` is a promise: the segment's final begins with its words (case and
punctuation aside), and a
later partial's settled text only extends it. Checked through the native protocol, plain and
with the numerals text stage (which must keep the promise while it rewrites).
"""

import asyncio

import pytest

from backends.stable import normalise
from tests.backends.conformance import FIXTURES
from tests.client import stream

pytest.importorskip("faster_whisper")


def settled_promises_hold(messages: list[dict]) -> int:
    finals = {m["segment_seq"]: m["text"] for m in messages if m["type"] == "final"}
    last: dict[int, str] = {}
    settled_words = 0
    for m in messages:
        if m["type"] != "partial":
            continue
        settled, seq = m["stable_text"], m["segment_seq"]
        assert m["text"].startswith(settled), m
        promised = [normalise(w) for w in settled.split()]
        said = [normalise(w) for w in finals[seq].split()]
        assert said[:len(promised)] == promised, (m, finals[seq])
        assert settled.startswith(last.get(seq, "")), (last.get(seq), settled)
        last[seq] = settled
        settled_words = max(settled_words, len(settled.split()))
    return settled_words


@pytest.mark.parametrize("params", [{}, {"numerals": "true"}])
def test_every_settled_word_begins_its_final(whisper, params):
    clip = FIXTURES["lj_LJ001-0001"]  # one long sentence: words settle well before its end
    url = whisper.ws_url(call_id="settled", sample_rate=16000, **params)
    got = asyncio.run(stream(url, clip.pcm(), realtime=1.0, tail_silence_ms=1000))
    assert got.of("final") and got.of("partial")
    assert settled_promises_hold(got.messages) >= 3, "words settle before the final"
    partial = next(m for m in got.of("partial") if m["stable_text"])
    final = next(m for m in got.of("final") if m["segment_seq"] == partial["segment_seq"])
    assert partial["seq"] < final["seq"]  # settled text came ahead of the final
