"""The backpressure policies of SessionJob (input bounded in audio time: wait for room, or
shed the oldest; output: shed partials, never finals), through its real janus queues."""

import asyncio

import numpy as np

from inference.job import AudioChunk, Control, ControlItem, Next, SessionJob
from observability.metrics import Metrics
from session.endpointer import EndpointConfig
from session.events import Final, FinalReason, Partial, SessionEnd, SpeechStarted, SpeechStopped
from session.recognizer import RecognizerConfig, SegmentRecognizer
from tests.fakes import ScriptedStream, speech


def make_job(in_ms=400, out_size=10, stream=None):
    scheduled = []
    metrics = Metrics()
    rec = SegmentRecognizer(
        stream or ScriptedStream(),
        RecognizerConfig(EndpointConfig(speech_start_ms=20, preroll_ms=0), partial_ms=100),
    )
    job = SessionJob(
        rec, schedule=scheduled.append, metrics=metrics, in_queue_ms=in_ms,
        out_queue_size=out_size,
    )
    return job, scheduled, metrics


def chunk(value: int, ms: int = 100) -> AudioChunk:
    return AudioChunk(np.full(16 * ms, value, dtype=np.int16).tobytes(), 0.0)


def drain_events(job) -> list:
    return [job._out.sync_q.get_nowait() for _ in range(job.output_depth)]


async def test_input_is_bounded_in_audio_time_and_sheds_the_oldest():
    job, scheduled, _ = make_job(in_ms=300)
    shed = [job.offer(chunk(v)) for v in (1, 2, 3, 4, 5)]
    assert shed == [0, 0, 0, 1600, 1600], "100 ms chunks: the fourth and fifth push one out"
    assert scheduled == [job], "a queued session is scheduled once, not per frame"
    assert job.queued_samples == 4800 and job.input_depth == 3
    queued = [job._in.sync_q.get_nowait() for _ in range(3)]
    assert [np.frombuffer(c.data, "<i2")[0] for c in queued] == [3, 4, 5]


async def test_bound_counts_audio_not_frames():
    job, _, _ = make_job(in_ms=300)
    for _ in range(15):  # 15 frames of 20 ms = 300 ms: all fit
        assert job.offer(chunk(0, ms=20)) == 0
    assert not job.fits(320) and job.fits(0)


async def test_an_empty_queue_takes_a_piece_larger_than_the_bound():
    job, _, _ = make_job(in_ms=100)
    assert job.fits(16000) and job.offer(chunk(0, ms=1000)) == 0


async def test_put_waits_for_room_and_loses_nothing():
    job, _, _ = make_job(in_ms=200)
    await job.put(chunk(1))
    await job.put(chunk(2))
    third = asyncio.create_task(job.put(chunk(3)))
    await asyncio.sleep(0.05)
    assert not third.done(), "full: the producer waits"
    await asyncio.to_thread(job.run)  # drains both; the waiting chunk may land meanwhile
    await asyncio.wait_for(third, 1)
    assert job.queued_samples == 1600 and job.discarded_samples == 0


async def test_controls_are_never_dropped_and_keep_their_order():
    stream = ScriptedStream()
    job, _, _ = make_job(in_ms=300, stream=stream)
    job.offer(AudioChunk(speech(300).tobytes(), 0.0))
    job.offer(ControlItem(Control.COMMIT, 0.0))
    # Full: this pushes out the first audio, then meets the commit, which must survive.
    assert job.offer(AudioChunk(speech(300).tobytes(), 0.0)) == 4800
    job.offer(ControlItem(Control.EOS, 0.0))
    assert await asyncio.to_thread(job.run) is Next.IDLE
    events = drain_events(job)
    finals = [e for e in events if isinstance(e, Final)]
    assert [f.reason for f in finals] == [FinalReason.EOS], "commit ran before the later audio"
    assert isinstance(events[-1], SessionEnd)
    assert [type(e).__name__ for e in events].count("Committed") == 1


async def test_commit_is_acknowledged_with_the_segment_it_closed_or_none():
    job, _, _ = make_job(in_ms=5000)
    job.offer(ControlItem(Control.COMMIT, 0.0))  # nothing open
    job.offer(AudioChunk(speech(300).tobytes(), 0.0))
    job.offer(ControlItem(Control.COMMIT, 0.0))
    await asyncio.to_thread(job.run)
    events = [e for e in drain_events(job) if not isinstance(e, SpeechStarted | SpeechStopped)]
    assert [type(e).__name__ for e in events] == ["Committed", "Final", "Committed"]
    assert events[0].segment_seq is None and events[2].segment_seq == events[1].segment_seq
    assert events[0].audio_ms == 0 and events[2].audio_ms == 300  # audio since the last commit


async def test_shutdown_finalizes_the_open_segment_then_ends_with_shutting_down():
    job, _, _ = make_job(in_ms=5000)
    job.offer(AudioChunk(speech(300).tobytes(), 0.0))
    job.offer(ControlItem(Control.SHUTDOWN, 0.0))
    await asyncio.to_thread(job.run)
    events = drain_events(job)
    assert [e.reason for e in events if isinstance(e, Final)] == [FinalReason.SHUTDOWN]
    assert events[-1].code.value == "shutting_down"


async def test_output_sheds_partials_above_80_percent_but_never_finals():
    job, _, metrics = make_job(out_size=10)
    out = job._out.sync_q
    for i in range(8):
        out.put_nowait(Partial(1, f"p{i}", 0, 0))
    job._emit(Partial(1, "dropped", 0, 0))
    assert job.partials_dropped == 1
    for _ in range(20):  # far past the bound: finals still go in, and nothing blocks
        job._emit(Final(1, "x", 0, 0, FinalReason.ENDPOINT))
    assert out.qsize() == 28
    assert metrics.partials_dropped._value.get() == 1


async def test_run_reports_more_work_when_audio_arrives_meanwhile():
    job, scheduled, _ = make_job(in_ms=1000)
    job.offer(chunk(0))
    assert await asyncio.to_thread(job.run) is Next.IDLE
    job.offer(chunk(0))
    assert scheduled == [job, job], "an idle job is scheduled again when audio arrives"


async def test_backend_failure_becomes_a_session_error_and_later_audio_is_counted():
    job, _, _ = make_job(in_ms=1000, stream=ScriptedStream(fail_on="final"))
    job.offer(AudioChunk(speech(500).tobytes(), 0.0))
    job.offer(ControlItem(Control.COMMIT, 0.0))
    job.offer(chunk(0))
    await asyncio.to_thread(job.run)
    events = drain_events(job)
    assert events[-1].code.value == "backend_error"
    assert job.discarded_samples == 1600
    assert job.processed_samples == 16 * 500


async def test_due_partial_parks_the_job_and_new_audio_promotes_it():
    job, scheduled, _ = make_job(in_ms=5000)
    job.offer(AudioChunk(speech(300).tobytes(), 0.0))
    assert await asyncio.to_thread(job.run) is Next.PARTIAL
    job.offer(AudioChunk(speech(100).tobytes(), 0.0))  # promoted: scheduled as work again
    assert scheduled == [job, job]
    assert await asyncio.to_thread(job.run_partial) is Next.IDLE, "stale parked entry skipped"
    assert await asyncio.to_thread(job.run) is Next.PARTIAL
    assert await asyncio.to_thread(job.run_partial) is Next.IDLE
    events = [job._out.sync_q.get_nowait() for _ in range(job.output_depth)]
    assert [type(e).__name__ for e in events] == ["SpeechStarted", "Partial"]
    assert events[1].end_ms == 400, "the partial covers the latest audio"


async def test_a_backend_result_landing_mid_run_is_not_lost():
    """poke() while the job is queued or running must not be dropped: its settling sends
    the job round once more, so a partial that landed (on the GPU engine's thread) is
    collected now, not at the next audio, which may never come."""

    class LandingStream(ScriptedStream):
        landing = None  # called from inside the run, as a decode landing would

        def accept(self, pcm):
            super().accept(pcm)
            if self.landing:
                self.landing()

    stream = LandingStream()
    job, scheduled, _ = make_job(stream=stream)
    job.poke()
    job.poke()  # lands while queued: one entry only, and the coming run collects it
    assert scheduled == [job]
    assert job.run() is Next.IDLE

    stream.landing = job.poke
    job.offer(AudioChunk(speech(300).tobytes(), 0.0))
    assert job.run() is Next.AGAIN  # landed mid-run: not lost
    stream.landing = None
    assert job.run() is Next.PARTIAL  # the next run parks it for its partial
    assert len(scheduled) == 2  # the offer scheduled it; the mid-run poke did not
