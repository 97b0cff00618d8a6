"""Both backpressure policies of SessionJob, driven through real janus queues."""

import asyncio

import janus
import numpy as np

from inference.job import AudioChunk, Control, ControlItem, Next, SessionJob
from observability.metrics import Metrics
from session.endpointer import EndpointConfig
from session.events import Final, FinalReason, Partial, SessionEnd
from session.recognizer import RecognizerConfig, SegmentRecognizer
from tests.fakes import ScriptedStream, speech


def make_job(in_size=4, out_size=10, stream=None):
    scheduled = []
    metrics = Metrics()
    rec = SegmentRecognizer(
        stream or ScriptedStream(),
        RecognizerConfig(EndpointConfig(speech_start_ms=20, preroll_ms=0), partial_ms=100),
    )
    job = SessionJob(
        rec, in_queue=janus.Queue(in_size), out_queue=janus.Queue(),
        out_queue_size=out_size, schedule=scheduled.append, metrics=metrics,
    )
    return job, scheduled, metrics


def chunk(value: int, ms: int = 100) -> AudioChunk:
    return AudioChunk(np.full(16 * ms, value, dtype=np.int16).tobytes(), 0.0)


async def test_input_drops_oldest_audio_and_schedules_once():
    job, scheduled, _ = make_job(in_size=3)
    dropped = [job.offer(chunk(v)) for v in (1, 2, 3, 4, 5)]
    assert dropped[:3] == [None, None, None]
    assert [np.frombuffer(d.data, "<i2")[0] for d in dropped[3:]] == [1, 2]
    assert scheduled == [job], "a queued session is scheduled once, not per frame"
    assert job.input_depth == 3


async def test_controls_are_never_dropped_and_keep_their_order():
    stream = ScriptedStream()
    job, _, _ = make_job(in_size=2, stream=stream)
    job.offer(AudioChunk(speech(300).tobytes(), 0.0))
    job.offer(ControlItem(Control.COMMIT, 0.0))
    # Queue full: these push out the audio, then the commit, which must survive.
    job.offer(AudioChunk(speech(300).tobytes(), 0.0))
    job.offer(ControlItem(Control.EOS, 0.0))
    assert await asyncio.to_thread(job.run) is Next.IDLE
    events = []
    while job.output_depth:
        events.append(job._out.sync_q.get_nowait())
    finals = [e for e in events if isinstance(e, Final)]
    assert [f.reason for f in finals] == [FinalReason.EOS], "commit ran before the later audio"
    assert isinstance(events[-1], SessionEnd)


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
    job, scheduled, _ = make_job(in_size=10)
    job.offer(chunk(0))
    assert await asyncio.to_thread(job.run) is Next.IDLE
    job.offer(chunk(0))
    assert scheduled == [job, job], "an idle job is scheduled again when audio arrives"


async def test_backend_failure_becomes_a_session_error_and_later_audio_is_counted():
    job, _, _ = make_job(in_size=10, stream=ScriptedStream(fail_on="final"))
    job.offer(AudioChunk(speech(500).tobytes(), 0.0))
    job.offer(ControlItem(Control.COMMIT, 0.0))
    job.offer(chunk(0))
    await asyncio.to_thread(job.run)
    events = [job._out.sync_q.get_nowait() for _ in range(job.output_depth)]
    assert events[-1].code.value == "backend_error"
    assert job.discarded_samples == 1600
    assert job.processed_samples == 16 * 500


async def test_due_partial_parks_the_job_and_new_audio_promotes_it():
    job, scheduled, _ = make_job(in_size=50)
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
