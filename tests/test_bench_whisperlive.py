"""``bench.whisperlive``: how it keeps WhisperLive's segments, how it scores a stream, and its
sttd client against a real server (mock backend). WhisperLive itself needs torch and a venv
of its own, so it runs in the benchmark, not here."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from bench.turns import speech
from bench.whisperlive import (
    CHUNK,
    CHUNK_S,
    RATE,
    Clip,
    Final,
    Heard,
    Partial,
    WhisperLiveTranscript,
    capacity,
    playlist,
    score_stream,
    stream,
    wer,
)
from client.stream import read_pcm16k
from config import REPO_ROOT


def seg(start, end, text, completed):
    return {"start": f"{start:.3f}", "end": f"{end:.3f}", "text": text, "completed": completed}


def test_whisperlive_segments_are_kept_as_its_client_keeps_them():
    t = WhisperLiveTranscript()
    assert t.update([seg(0, 1.5, " Hello", False)]) == ([], seg(0, 1.5, " Hello", False))
    # the server resends the last n completed segments with every message
    new, shown = t.update([seg(0, 1.6, " Hello there.", True), seg(1.6, 2.4, " How", False)])
    assert [s["text"] for s in new] == [" Hello there."] and shown["text"] == " How"
    new, shown = t.update([seg(0, 1.6, " Hello there.", True),
                           seg(1.6, 3.0, " How are you?", True)])
    assert [s["text"] for s in new] == [" How are you?"] and shown is None
    # a completed segment starting before the last kept one's end is a repeat: dropped
    new, _ = t.update([seg(2.5, 3.1, " you?", True), seg(3.1, 4.0, " Fine", False)])
    assert new == []
    assert [s["text"] for s in t.kept] == [" Hello there.", " How are you?"]
    assert t.closing() == " Fine"  # the open segment joins the transcript at the end
    t.update([seg(3.1, 4.2, " Fine", True)])
    assert t.closing() == ""  # ... unless it is the last kept one


def clip(n_speech_s: float, text: str) -> Clip:
    pcm = np.zeros(int((n_speech_s + 0.5) * RATE), np.int16)
    return Clip("c", pcm, text, (int(0.25 * RATE), int((0.25 + n_speech_s) * RATE)))


def test_a_stream_is_scored_from_its_own_timeline():
    a, b = clip(2.0, "one two three"), clip(1.0, "four")
    pl = playlist([a, b], 0, 4.0, gap_ms=1000, tail_s=1.0)  # a and its gap: 3.5 s
    assert [p.offset for p in pl.placed] == [0, a.pcm.size + RATE]
    assert pl.pcm.size % CHUNK == 0
    heard = Heard(sent=[100 + i * CHUNK_S for i in range(pl.pcm.size // CHUNK)])
    a_end = heard.sent[pl.placed[0].speech_end // CHUNK]
    b_off = pl.placed[1].offset / RATE
    heard.finals = [
        Final(a_end + 0.4, "one two", 0.25, 1.5),  # a's first part
        Final(a_end + 0.6, "three", 1.5, 2.25),  # a's end, 600 ms after it was sent
        Final(a_end + 9, "four", b_off + 0.25, b_off + 0.6),  # ends 0.65 s early: ok
    ]
    heard.partials = [Partial(heard.sent[3] + 0.05, "one", 0.5),
                      Partial(heard.sent[4] + 0.05, "one", 0.5),  # a repeat: not scored
                      Partial(heard.sent[5] + 0.2, "one two", 1.3)]  # in chunk 5
    s = score_stream(pl, heard)
    assert s["final_ms"][0] == pytest.approx(600)
    assert s["unfinished"] == 0 and len(s["final_ms"]) == 2
    assert len(s["partial_lag_ms"]) == 2
    assert s["partial_lag_ms"][1] == pytest.approx(200)
    assert s["hypothesis"] == "one two three four" and wer([(s["reference"],
                                                             s["hypothesis"])]) == 0
    # b's final stops 1.5 s short of its speech end: b is unfinished, not fast
    heard.finals[-1] = Final(a_end + 9, "four", b_off + 0.1, b_off + 0.2)
    assert score_stream(pl, heard)["unfinished"] == 1


def test_capacity_is_the_last_rung_held_with_every_smaller_one():
    rows = [{"server": "x", "streams": n, "within_slo": ok}
            for n, ok in [(1, True), (2, True), (4, False), (8, True)]]
    assert capacity(rows, "x") == 2


def test_its_sttd_client_against_a_real_server(server):
    """The client the benchmark points at sttd, end to end: a reference clip at real time,
    its final found, owned by the clip, scored."""
    pcm = np.frombuffer(read_pcm16k(REPO_ROOT / "references" / "ls_6930_75918_0000.wav"), "<i2")
    found = speech(pcm)
    text = "concord returned to its place amidst the tents"
    pl = playlist([Clip("ls", pcm, text, (found[0][0], found[-1][1]))], 0, 0.1,
                  gap_ms=1000, tail_s=1.0)
    loop = asyncio.new_event_loop()
    try:
        heard = loop.run_until_complete(
            stream("sttd", server.ws_url(call_id=None), pl, loop.time()))
    finally:
        loop.close()
    assert heard.error is None
    assert len(heard.sent) == pl.pcm.size // CHUNK
    assert heard.finals and heard.partials
    s = score_stream(pl, heard)
    assert s["unfinished"] == 0 and len(s["final_ms"]) == 1
    assert 0 < s["final_ms"][0] < 5000
    assert wer([(s["reference"], s["hypothesis"])]) < 20
