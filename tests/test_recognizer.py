from dataclasses import replace

import numpy as np

from backends.base import Hypothesis, Word
from session.endpointer import EndpointConfig
from session.events import Final, FinalReason, Partial, SpeechStarted, SpeechStopped
from session.recognizer import RecognizerConfig, SegmentRecognizer
from tests.fakes import ScriptedStream, silence, speech

CFG = RecognizerConfig(
    endpoint=EndpointConfig(speech_start_ms=60, silence_ms=300, preroll_ms=100),
    vad_threshold=300,
    partial_ms=200,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def feed(rec, pcm, chunk_ms=100, at=0.0):
    events = []
    step = 16 * chunk_ms
    for i in range(0, pcm.size, step):
        events += rec.feed(pcm[i : i + step], at)
        events += rec.maybe_partial()
    return events


def test_segment_lifecycle_partials_then_one_final_last():
    stream = ScriptedStream()
    rec = SegmentRecognizer(stream, CFG)
    audio = np.concatenate([silence(500), speech(1000), silence(600)])
    events = feed(rec, audio)
    kinds = [type(e) for e in events]
    assert kinds[0] is SpeechStarted and kinds[-2:] == [SpeechStopped, Final]
    assert kinds.count(Final) == 1
    assert all(k is Partial for k in kinds[1:-2]) and kinds.count(Partial) >= 3
    start, stopped, final = events[0], events[-2], events[-1]
    assert stopped.end_ms == final.end_ms and stopped.segment_seq == final.segment_seq
    assert start.start_ms == 400  # 100 ms pre-roll before the onset at 500 ms
    assert final.reason is FinalReason.ENDPOINT
    assert final.start_ms == 400 and final.end_ms == 1500
    assert final.words[0].start_ms == 400, "word times are shifted to session time"
    texts = [e.text for e in events if isinstance(e, Partial)]
    assert all(final.text.startswith(t) for t in texts), "partials are prefixes of the final"
    assert len(set(texts)) == len(texts), "an unchanged partial is not repeated"


def test_segment_seq_increments_per_final_and_silence_yields_nothing():
    rec = SegmentRecognizer(ScriptedStream(), CFG)
    assert feed(rec, silence(2000)) == []
    audio = np.concatenate([speech(400), silence(500), speech(400), silence(500)])
    finals = [e for e in feed(rec, audio) if isinstance(e, Final)]
    assert [f.segment_seq for f in finals] == [1, 2]
    assert rec.segment_seq == 3


def test_commit_flushes_sub_frame_audio_and_is_a_noop_in_silence():
    stream = ScriptedStream()
    rec = SegmentRecognizer(stream, CFG)
    assert rec.commit(0.0) == []
    events = feed(rec, speech(1010), chunk_ms=1010)  # 10 ms beyond whole frames
    assert rec.processed_samples == 16160
    (final,) = [e for e in rec.commit(0.0) if isinstance(e, Final)]
    assert final.reason is FinalReason.COMMIT
    assert final.end_ms == 1010
    assert not rec.in_speech
    assert events and isinstance(events[0], SpeechStarted)


def test_latencies_come_from_the_injected_clock():
    clock = Clock()
    rec = SegmentRecognizer(ScriptedStream(), CFG, clock=clock)
    rec.feed(speech(500), received_at=99.0)  # speech start seen at t=99
    clock.now = 99.25
    assert rec.maybe_partial()  # first text at t=99.25
    rec.feed(silence(200), received_at=99.5)
    clock.now = 99.8
    (final,) = [e for e in rec.feed(silence(200), received_at=99.75) if isinstance(e, Final)]
    assert final.first_token_ms == 250
    assert final.latency_ms == 50


def test_partials_disabled_for_backends_without_them():
    rec = SegmentRecognizer(ScriptedStream(), RecognizerConfig(CFG.endpoint, partials=False))
    events = feed(rec, np.concatenate([speech(1000), silence(600)]))
    assert not any(isinstance(e, Partial) for e in events)
    assert sum(isinstance(e, Final) for e in events) == 1


def test_inference_observer_sees_every_backend_call():
    calls = []
    rec = SegmentRecognizer(ScriptedStream(), CFG, on_inference=lambda k, s: calls.append(k))
    feed(rec, np.concatenate([speech(1000), silence(600)]))
    assert calls.count("final") == 1 and calls.count("partial") >= 3


def test_close_closes_the_stream_once():
    stream = ScriptedStream()
    rec = SegmentRecognizer(stream, CFG)
    rec.close()
    rec.close()
    assert stream.closed


# -- long segments: a cut at max_segment_ms, the replay before it, the merge of the finals --

class WordPerToneStream:
    """An ASRStream that hears words: each run of one amplitude ≥ 500 is the word
    ``w<amplitude>``, cut to ``w<amplitude minus its last digit>`` when it heard under 80 ms
    of it (a word broken at a segment edge). Times are segment milliseconds."""

    def __init__(self) -> None:
        self.pcm = np.zeros(0, np.int16)

    def accept(self, pcm: np.ndarray) -> None:
        self.pcm = np.concatenate([self.pcm, pcm])

    def _words(self) -> list[Word]:
        level = np.abs(self.pcm.astype(np.int32))
        edges = np.flatnonzero(np.diff(level)) + 1
        words = []
        for a, b in zip([0, *edges], [*edges, level.size], strict=True):
            if level[a] >= 500:
                name = f"w{level[a]}" if b - a >= 16 * 80 else f"w{level[a] // 10}"
                words.append(Word(name, a // 16, b // 16))
        return words

    def partial(self) -> Hypothesis | None:
        text = " ".join(w.word for w in self._words())
        return Hypothesis(text, stable_chars=len(text)) if text else None

    def finalize(self) -> Hypothesis:
        words, self.pcm = self._words(), np.zeros(0, np.int16)
        return Hypothesis(" ".join(w.word for w in words), words=tuple(words))

    def close(self) -> None:
        pass


def said(n: int, gap: int | None, lead_ms: int = 0) -> np.ndarray:
    """``n`` words of 100 ms (word k at amplitude 1000 + k); with ``gap``, each word's last
    20 ms at that amplitude: still voiced, but a quiet point between words."""
    blocks = [silence(lead_ms)]
    for k in range(n):
        word = np.full(1600, 1000 + k, np.int16) * np.resize(np.array([1, -1], np.int16), 1600)
        if gap is not None:
            word[-320:] = np.sign(word[-320:]) * gap
        blocks.append(word)
    return np.concatenate(blocks)


LONG = RecognizerConfig(
    endpoint=EndpointConfig(speech_start_ms=60, silence_ms=300, preroll_ms=100,
                            max_segment_ms=2000, cut_window_ms=600, overlap_ms=400),
    vad_threshold=300, partial_ms=200)


def long_run(audio: np.ndarray, config: RecognizerConfig = LONG):
    rec = SegmentRecognizer(WordPerToneStream(), config)
    events = feed(rec, np.concatenate([audio, silence(600)]))
    return events, [e for e in events if isinstance(e, Final)]


def spoken(finals) -> list[str]:
    return " ".join(f.text for f in finals).split()


def test_long_speech_is_cut_between_words_and_every_word_comes_once():
    reference = [f"w{1000 + k}" for k in range(60)]
    events, finals = long_run(said(60, gap=200, lead_ms=40))  # gaps 14 dB down, voiced
    assert [f.reason for f in finals[:-1]] == [FinalReason.MAX_SEGMENT] * (len(finals) - 1)
    assert len(finals) >= 3
    assert spoken(finals) == reference
    for f in finals:  # word times are session times, the segment's own start included
        assert all(w.start_ms == 40 + 100 * (int(w.word[1:]) - 1000) for w in f.words)


def test_a_hard_cut_inside_a_word_loses_and_repeats_nothing():
    reference = [f"w{1000 + k}" for k in range(60)]
    events, finals = long_run(said(60, gap=None, lead_ms=50))
    assert len(finals) >= 3
    words = spoken(finals)
    assert len(words) == len(reference)
    broken = [(w, r) for w, r in zip(words, reference, strict=True) if w != r]
    assert all(r.startswith(w) for w, r in broken), "only words broken at a cut differ"
    assert len(broken) <= len(finals) - 1


def test_without_the_replay_words_at_the_cuts_break():
    config = replace(LONG, endpoint=replace(LONG.endpoint, cut_window_ms=0, overlap_ms=0))
    _, finals = long_run(said(60, gap=None, lead_ms=50), config)
    words = spoken(finals)
    assert len(words) > 60, "each cut splits a word in two: two broken halves"


def test_segment_times_stay_in_order_across_cuts():
    events, finals = long_run(said(60, gap=None, lead_ms=50))
    starts = [e for e in events if isinstance(e, SpeechStarted)]
    stops = [e for e in events if isinstance(e, SpeechStopped)]
    for before, after in zip(finals, finals[1:], strict=False):
        assert before.start_ms < after.start_ms and before.end_ms <= after.end_ms
        assert after.start_ms >= before.end_ms, "a replayed segment starts at the cut"
    for stop, start in zip(stops, starts[1:], strict=False):
        assert start.start_ms == stop.end_ms, "a replayed segment starts, for clients, at the cut"


def test_partials_of_a_replayed_segment_do_not_repeat_the_previous_final():
    events, _ = long_run(said(60, gap=200, lead_ms=40))
    shown: set[str] = set()
    seq = None
    for e in events:
        if isinstance(e, Final):
            shown.update(e.text.split())
            seq = e.segment_seq + 1
        elif isinstance(e, Partial) and e.segment_seq == seq:
            assert not set(e.text.split()) & shown, e.text
            assert e.stable_chars <= len(e.text) and e.text.startswith(e.stable_text)


def test_the_merge_runs_on_the_backends_words_before_the_text_stage():
    from session.text import Text, TextStage

    def digits(text: Text, *, final: bool) -> Text:  # like numerals: words become numbers
        words = tuple(replace(w, word=w.word[3:]) for w in text.words)
        return replace(text, text=" ".join(t[3:] for t in text.text.split()), words=words)

    rec = SegmentRecognizer(WordPerToneStream(), LONG, text_stage=TextStage((digits,)))
    events = feed(rec, np.concatenate([said(60, gap=200, lead_ms=40), silence(600)]))
    finals = [e for e in events if isinstance(e, Final)]
    assert spoken(finals) == [f"{k:02d}" for k in range(60)]


class ShortFinalStream(WordPerToneStream):
    """Leaves out the words of a long segment's last 1.2 s from its final, as Whisper may."""

    def finalize(self) -> Hypothesis:
        limit = self.pcm.size // 16 - 1200 if self.pcm.size >= 16 * 1800 else None
        words = [w for w in self._words() if limit is None or w.end_ms <= limit]
        self.pcm = np.zeros(0, np.int16)
        return Hypothesis(" ".join(w.word for w in words), words=tuple(words))


def test_a_final_that_stops_short_of_its_cut_has_the_next_segment_reach_back():
    rec = SegmentRecognizer(ShortFinalStream(), LONG)
    events = feed(rec, np.concatenate([said(40, gap=200, lead_ms=40), silence(600)]))
    finals = [e for e in events if isinstance(e, Final)]
    assert spoken(finals) == [f"w{1000 + k}" for k in range(40)]
    starts = [e.start_ms for e in events if isinstance(e, SpeechStarted)]
    assert starts == sorted(starts)


class PreparingStream(ScriptedStream):
    """Decodes its final ahead when asked; counts the decodes it made."""

    def __init__(self) -> None:
        super().__init__()
        self.decodes = 0
        self.prepared: Hypothesis | None = None

    def prepare_final(self) -> None:
        self.decodes += 1
        self.prepared = super().finalize()
        self.finals -= 1
        self.samples = sum(1600 for _ in self.prepared.words)  # finalize reset it; restore

    def forget_prepared(self) -> None:
        self.prepared = None

    def finalize(self) -> Hypothesis:
        if self.prepared is not None:
            hyp, self.prepared = self.prepared, None
            self.samples = 0
            self.finals += 1
            return hyp
        self.decodes += 1
        return super().finalize()


# the endpoint after 300 ms of silence, the early decode 100 ms into the pause
EARLY = replace(CFG, early_final_lead_ms=200, early_final_min_ms=100)


def early_recognizer(cfg=EARLY):
    stream, outcomes = PreparingStream(), []
    return stream, outcomes, SegmentRecognizer(stream, cfg, on_early_final=outcomes.append)


def test_a_final_decoded_in_the_pause_is_the_final_and_costs_no_second_decode():
    stream, outcomes, rec = early_recognizer()
    events = feed(rec, np.concatenate([speech(1000), silence(150)]))
    assert stream.prepared is not None and stream.decodes == 1  # 100 ms into the pause
    prepared = stream.prepared.text
    pause = feed(rec, silence(100))
    assert not any(isinstance(e, Partial) for e in pause), "no partials once it is decoded"
    events += pause + feed(rec, silence(300))
    (final,) = [e for e in events if isinstance(e, Final)]
    assert final.text == prepared and final.reason is FinalReason.ENDPOINT
    assert final.end_ms == 1000, "the segment still ends at its last voiced frame"
    assert stream.decodes == 1 and outcomes == [True]


def test_speech_after_the_prepared_final_drops_it_and_the_final_hears_everything():
    stream, outcomes, rec = early_recognizer()
    audio = np.concatenate([speech(600), silence(200), speech(600), silence(500)])
    events = feed(rec, audio)
    (final,) = [e for e in events if isinstance(e, Final)]
    assert outcomes == [False, True], "one wasted in the short pause, one used"
    # all 1 400 ms of speech and the 100 ms of pause before the second early decode
    assert final.end_ms == 1400 and len(final.words) == 15
    assert stream.decodes == 2


def test_a_batch_that_reaches_the_endpoint_decodes_once_and_prepares_nothing():
    stream, outcomes, rec = early_recognizer()
    feed(rec, speech(1000))
    events = feed(rec, silence(500), chunk_ms=500)
    assert sum(isinstance(e, Final) for e in events) == 1
    assert stream.decodes == 1 and outcomes == []


def test_a_commit_after_a_prepared_final_decodes_what_it_was_given():
    stream, outcomes, rec = early_recognizer()
    feed(rec, np.concatenate([speech(1000), silence(200)]))
    assert stream.prepared is not None
    (final,) = [e for e in rec.commit(0.0) if isinstance(e, Final)]
    assert final.reason is FinalReason.COMMIT and outcomes == [False]
    assert stream.decodes == 2


def test_no_early_final_when_it_would_come_no_sooner_than_the_endpoint():
    for lead, least in ((None, 100), (0, 100), (200, 300), (100, 400)):
        stream, outcomes, rec = early_recognizer(
            replace(CFG, early_final_lead_ms=lead, early_final_min_ms=least))
        feed(rec, np.concatenate([speech(1000), silence(600)]))
        assert stream.decodes == 1 and outcomes == [], (lead, least)


def test_no_early_final_while_the_server_has_no_time_for_one():
    stream, outcomes, rec = early_recognizer()
    busy = [True]
    rec.may_prepare = lambda: not busy[0]
    feed(rec, np.concatenate([speech(1000), silence(150)]))
    assert stream.prepared is None
    busy[0] = False
    feed(rec, silence(100))  # the pause goes on and a thread is free: it is decoded now
    assert stream.prepared is not None and stream.decodes == 1


def test_a_long_endpoint_decodes_its_final_a_lead_before_it_and_partials_go_on_until_then():
    cfg = replace(CFG, endpoint=replace(CFG.endpoint, silence_ms=2000), early_final_lead_ms=300)
    stream, outcomes, rec = early_recognizer(cfg)
    feed(rec, speech(1000))
    pause = feed(rec, silence(1600))
    assert stream.prepared is None, "not 200 ms into a 2 s endpoint"
    assert sum(isinstance(e, Partial) for e in pause) >= 3, "partials go on in the pause"
    feed(rec, silence(100))  # 1 700 ms: the lead before the endpoint
    assert stream.prepared is not None
    (final,) = [e for e in feed(rec, silence(400)) if isinstance(e, Final)]
    assert outcomes == [True] and stream.decodes == 1
