"""The end-of-turn state machine (``session.turns``) on its own, and inside the recognizer
where audio time drives it."""

import numpy as np

from backends.base import Word
from session.endpointer import EndpointConfig
from session.events import EndOfTurn, Final, FinalReason
from session.options import RecognitionOptions
from session.recognizer import RecognizerConfig, SegmentRecognizer
from session.turns import TurnDetector
from tests.fakes import ScriptedStream, silence, speech


def final(text: str, end_ms: int, words: tuple[Word, ...] = ()) -> Final:
    return Final(1, text, 0, end_ms, FinalReason.ENDPOINT, words=words)


def test_a_turn_ends_once_after_enough_silence_past_the_last_word():
    turns = TurnDetector(1000)
    turns.on_final(final("hello there", 1500, (Word("hello", 200, 600), Word("there", 700, 1200))))
    assert turns.advance(2100, in_speech=False) is None  # 900 ms after the last word
    assert turns.advance(2200, in_speech=False) == EndOfTurn(1200, 1000)
    assert turns.advance(5000, in_speech=False) is None, "once per turn"


def test_an_open_segment_holds_the_turn_and_its_words_restart_the_count():
    turns = TurnDetector(1000)
    turns.on_final(final("one", 1000))  # no word times: the segment's end counts
    assert turns.advance(2500, in_speech=True) is None
    turns.on_final(final("two", 2600))
    assert turns.advance(3500, in_speech=False) is None
    assert turns.advance(3600, in_speech=False) == EndOfTurn(2600, 1000)


def test_no_words_no_turn_and_off_when_unset():
    turns = TurnDetector(1000)
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
