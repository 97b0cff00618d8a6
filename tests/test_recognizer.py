import numpy as np

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
