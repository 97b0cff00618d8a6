"""The end-of-turn state machine (``session.turns``) on its own, and inside the recognizer
where audio time drives it."""

import numpy as np

from backends.base import Word
from session.endpointer import EndpointConfig
from session.events import EndOfTurn, Final, FinalReason
from session.options import RecognitionOptions
from session.recognizer import RecognizerConfig, SegmentRecognizer
from session.turns import Cue, TurnConfig, TurnDetector, turn_cue
from tests.fakes import ScriptedStream, silence, speech


def final(text: str, end_ms: int, words: tuple[Word, ...] = ()) -> Final:
    return Final(1, text, 0, end_ms, FinalReason.ENDPOINT, words=words)


def test_a_turn_ends_once_after_enough_silence_past_the_end_of_speech():
    turns = TurnDetector(TurnConfig(1000))
    turns.on_final(final("hello there", 1500, (Word("hello", 200, 600), Word("there", 700, 1200))))
    # Counted from where the endpointer heard the speech end (1500), not the word's 1200.
    assert turns.advance(2400, in_speech=False) is None
    assert turns.advance(2500, in_speech=False) == EndOfTurn(1200, 1000, (1,), "none", 1000,
                                                             decided_at_ms=2500)
    assert turns.advance(5000, in_speech=False) is None, "once per turn"


def test_without_an_endpoint_the_last_word_marks_the_end_of_speech():
    turns = TurnDetector(TurnConfig(1000))
    turns.on_final(Final(1, "hello", 0, 3000, FinalReason.COMMIT, words=(Word("hello", 0, 400),)))
    assert turns.advance(1400, in_speech=False).silence_ms == 1000


def test_an_open_segment_holds_the_turn_and_its_words_restart_the_count():
    turns = TurnDetector(TurnConfig(1000))
    turns.on_final(final("one", 1000))  # no word times: the segment's end counts
    assert turns.advance(2500, in_speech=True) is None
    turns.on_final(final("two", 2600))
    assert turns.advance(3500, in_speech=False) is None
    assert turns.advance(3600, in_speech=False) == EndOfTurn(2600, 1000, (1, 1), "none", 1000,
                                                             decided_at_ms=3600)


def test_no_words_no_turn_and_off_when_unset():
    turns = TurnDetector(TurnConfig(1000))
    turns.on_final(final("", 1000))  # noise that transcribed to nothing
    assert turns.advance(9000, in_speech=False) is None
    off = TurnDetector(None)
    off.on_final(final("hi", 100))
    assert off.advance(9000, in_speech=False) is None
    turns.on_final(final("hi", 100))
    turns.clear()
    assert turns.advance(9000, in_speech=False) is None


def test_the_recognizer_emits_end_of_turn_after_the_final_in_audio_time():
    cfg = RecognizerConfig(endpoint=EndpointConfig(silence_ms=300, preroll_ms=100),
                           partials=False)
    rec = SegmentRecognizer(ScriptedStream(), cfg,
                            options=RecognitionOptions(turn_silence_ms=1000))
    events = []
    audio = np.concatenate([silence(500), speech(1000), silence(1500)])
    for i in range(0, audio.size, 1600):
        events += [(i + 1600, e) for e in rec.feed(audio[i:i + 1600], 0.0)]
    kinds = [type(e).__name__ for _, e in events]
    assert kinds[-2:] == ["Final", "EndOfTurn"], kinds
    at, turn = events[-1]
    last_word = events[-2][1].words[-1].end_ms
    assert turn.last_word_end_ms == last_word and turn.silence_ms >= 1000
    assert at * 1000 // 16000 - last_word < 1000 + 100, "fired within a chunk of the deadline"


def test_how_the_words_end_is_the_cue():
    assert turn_cue("See you at noon.") is Cue.COMPLETE
    assert turn_cue("Is that right?") is Cue.COMPLETE
    assert turn_cue('He said "stop!"') is Cue.COMPLETE
    assert turn_cue("I was going to") is Cue.TRAILING
    assert turn_cue("I was going to.") is Cue.TRAILING, "a period after 'to' is the model's"
    assert turn_cue("Well, um") is Cue.TRAILING
    assert turn_cue("first the eggs,") is Cue.TRAILING
    assert turn_cue("and then...") is Cue.TRAILING
    assert turn_cue("see you at noon") is Cue.NONE, "no punctuation: no cue (Kaldi)"
    assert turn_cue("") is Cue.NONE
    # A period the model was unsure of, or after a shaky word, is no cue (a cut sentence).
    assert turn_cue("He was not.", end_confidence=0.45) is Cue.NONE
    assert turn_cue("the type of this book.", last_word_confidence=0.2) is Cue.NONE
    assert turn_cue("See you at noon.", end_confidence=0.95,
                    last_word_confidence=0.9) is Cue.COMPLETE
    # Other languages: punctuation only (the word list is English).
    assert turn_cue("Je vais à la.", "fr") is Cue.COMPLETE
    assert turn_cue("Und dann,", "de") is Cue.TRAILING


def test_the_cue_moves_the_silence_between_min_and_max():
    config = TurnConfig(800, min_silence_ms=300, max_silence_ms=1500)
    done = TurnDetector(config)
    done.on_final(final("See you at noon.", 1000))
    assert done.advance(1299, in_speech=False) is None
    turn = done.advance(1300, in_speech=False)
    assert (turn.cue, turn.required_silence_ms) == ("complete", 300)
    trailing = TurnDetector(config)
    trailing.on_final(final("I want to go to", 1000))
    assert trailing.advance(2499, in_speech=False) is None
    assert trailing.advance(2500, in_speech=False).cue == "trailing"
    plain = TurnDetector(config)
    plain.on_final(final("see you at noon", 1000))
    assert plain.advance(1799, in_speech=False) is None
    assert plain.advance(1800, in_speech=False).required_silence_ms == 800


def test_a_later_final_replaces_the_cue_of_an_earlier_one():
    turns = TurnDetector(TurnConfig(800, min_silence_ms=300, max_silence_ms=1500))
    turns.on_final(Final(1, "Book a table.", 0, 1000, FinalReason.ENDPOINT))
    turns.on_final(Final(2, "For two and", 1200, 2000, FinalReason.ENDPOINT))
    assert turns.advance(3000, in_speech=False) is None
    turn = turns.advance(3500, in_speech=False)
    assert turn.segments == (1, 2) and turn.cue == "trailing"


def test_segments_end_no_later_than_the_shortest_turn():
    from transport.recognition import _segment_silence

    assert _segment_silence(RecognitionOptions(), 500) == 500
    assert _segment_silence(RecognitionOptions(turn_silence_ms=1000), 500) == 500
    assert _segment_silence(RecognitionOptions(turn_silence_ms=1000, turn_min_silence_ms=250),
                            500) == 250
    assert _segment_silence(RecognitionOptions(vad_silence_ms=200, turn_silence_ms=1000,
                                               turn_min_silence_ms=250), 500) == 200


# -- on the wire: a real server, real speech ---------------------------------------------------

def hesitation(pcm: np.ndarray, pause_s: float) -> np.ndarray:
    """``pcm`` with ``pause_s`` of silence at its quietest 40 ms in the middle third (a gap
    between words), as a speaker who stops and goes on."""
    hop = 160
    frames = pcm[: pcm.size // hop * hop].astype(np.float32).reshape(-1, hop)
    energy = np.convolve(np.sqrt((frames ** 2).mean(axis=1)), np.ones(4) / 4, "same")
    third = energy.size // 3
    cut = (third + int(np.argmin(energy[third:2 * third]))) * hop
    return np.concatenate([pcm[:cut], np.zeros(int(pause_s * 16000), np.int16), pcm[cut:]])


def test_native_end_of_turn_closes_the_turns_segments_after_their_finals(whisper):
    import asyncio

    from tests.backends.conformance import FIXTURES
    from tests.client import stream

    two = FIXTURES["ep_lj001_0002_0003_pause2p5"]  # two sentences, 2.5 s apart
    url = whisper.ws_url(call_id="t", sample_rate=16000, end_of_turn="true",
                         turn_min_silence_ms=600, turn_silence_ms=1200,
                         turn_max_silence_ms=2000)
    got = asyncio.run(stream(url, two.pcm(), tail_silence_ms=2500))
    kinds = [m["type"] for m in got.messages if m["type"] in ("final", "end_of_turn")]
    turns = got.of("end_of_turn")
    assert len(turns) == 2, kinds
    finals = {m["segment_seq"]: m for m in got.of("final") if m["text"]}
    for turn in turns:
        assert turn["segments"] and set(turn["segments"]) <= set(finals)
        assert kinds.index("end_of_turn") > 0
        last = finals[turn["segments"][-1]]
        assert turn["silence_ms"] >= turn["required_silence_ms"]
        assert turn["decided_at_ms"] >= last["end_ms"] + turn["required_silence_ms"]
        assert turn["cue"] in ("complete", "none", "trailing")
    # Each end_of_turn comes after the finals it closes and before the next turn's.
    order = [(m["type"], m.get("segment_seq")) for m in got.messages
             if m["type"] in ("final", "end_of_turn")]
    first_turn_at = order.index(("end_of_turn", None))
    assert all(("final", s) in order[:first_turn_at] for s in turns[0]["segments"])
    assert not set(turns[0]["segments"]) & set(turns[1]["segments"])


def test_native_turn_parameters_are_validated(whisper):
    import httpx

    r = httpx.get(whisper.http + "/v1/stt/ws?call_id=t&sample_rate=16000&turn_min_silence_ms=5",
                  headers={"Connection": "Upgrade", "Upgrade": "websocket",
                           "Sec-WebSocket-Version": "13",
                           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert r.status_code == 400 and "turn_min_silence_ms" in r.text
