"""The Qwen3-ASR backend's scheduling against a fake engine (the GPU is the edge we fake):
one decode in flight per session, coalescing, rollback prefixes, finals that abort the stale
partial and reset the segment, no cross-talk, failures, lifecycle."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest

from backends.base import BackendError, NotifyingStream, StreamOptions
from backends.qwen3 import Qwen3Backend, Qwen3Options, audio_tokens, check_model_len
from tests.qwen3_fake import FakeEngine, answer, hear, tone, words_of


def make(engine: FakeEngine | None = None, **options) -> tuple[Qwen3Backend, FakeEngine]:
    engine = engine or FakeEngine()
    opts = {"tick_sec": 0.5, "warmup": False, **options}
    backend = Qwen3Backend(engine, "fake-qwen3", Qwen3Options(**opts))
    backend.load()
    return backend, engine


@pytest.fixture
def closing():
    made: list[Qwen3Backend] = []

    def build(engine: FakeEngine | None = None, **options):
        backend, engine = make(engine, **options)
        made.append(backend)
        return backend, engine

    yield build
    for backend in made:
        backend.close()


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


class Driver:
    """Plays the session's part: feeds audio frames, asks for partials as the recognizer
    does, and collects what the stream wakes it for."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.woken = threading.Event()
        self.wakes = 0
        self.partials: list[str] = []
        self.settled: list[str] = []  # each partial's settled text
        stream.set_wake(self._wake)

    def _wake(self) -> None:
        self.wakes += 1
        self.woken.set()

    def collect(self) -> None:
        hyp = self.stream.partial()
        if hyp is not None:
            self.partials.append(hyp.text)
            self.settled.append(hyp.text[: hyp.stable_chars])

    def feed(self, pcm: np.ndarray, frame_ms: int = 100, realtime: bool = False) -> None:
        step = 16 * frame_ms
        for i in range(0, pcm.size, step):
            self.stream.accept(pcm[i : i + step])
            if realtime:
                time.sleep(frame_ms / 1000)
            self.collect()

    def settle(self, timeout: float = 5.0) -> None:
        """Wait for the decode in flight to land and collect it."""
        if self.woken.wait(timeout):
            self.woken.clear()
            self.collect()


def test_partials_grow_and_the_final_is_the_whole_segment(closing):
    backend, engine = closing()
    stream = backend.open_stream(StreamOptions())
    assert isinstance(stream, NotifyingStream)
    d = Driver(stream)
    d.feed(tone(3, 3.0), realtime=True)
    d.settle()
    assert d.partials, "no partial arrived"
    final = stream.finalize()
    assert final.text == words_of(3, 6)
    assert final.language == "en"
    assert 0 < final.confidence <= 1
    for text in d.partials:  # every partial is a prefix of the final, in growing order
        assert final.text.startswith(text)
    assert [len(p) for p in d.partials] == sorted(len(p) for p in d.partials)
    assert not any(c.mismatch for c in engine.calls)


class _RevisingEngine(FakeEngine):
    """Finals hear the first word otherwise than the partials did."""

    async def decode(self, request):
        decoded = await super().decode(request)
        if request.request_id.rsplit("-", 1)[-1].startswith("f"):
            return replace(decoded, text=decoded.text.replace("s7w0", "sevenw0", 1))
        return decoded


def test_settled_words_are_kept_by_the_final_even_where_it_hears_otherwise(closing):
    backend, _ = closing(_RevisingEngine())
    stream = backend.open_stream(StreamOptions())
    d = Driver(stream)
    for _ in range(6):
        d.feed(tone(7, 0.5))
        d.settle()
    settled = [s for s in d.settled if s]
    assert settled and settled[-1].startswith("s7w0"), settled
    final = stream.finalize()
    assert final.text.startswith(settled[-1]) and "sevenw0" not in final.text
    assert stream.revised == 1


def test_one_decode_in_flight_and_new_audio_coalesces(closing):
    backend, engine = closing(FakeEngine(base_s=0.3))
    stream = backend.open_stream(StreamOptions())
    d = Driver(stream)
    d.feed(tone(1, 4.0), frame_ms=50, realtime=True)  # 80 partial() calls, 4 s of audio
    partial_calls = [c for c in engine.calls if "-p" in c.request.request_id]
    assert engine.max_overlap(partial_calls) == 1
    # A decode takes 0.3 s and a tick is 0.5 s: far fewer decodes than calls, and each
    # later decode got all the audio that came meanwhile (latest wins), not a backlog.
    assert 4 <= len(partial_calls) <= 9
    sizes = [c.request.audio.size for c in partial_calls]
    assert sizes == sorted(sizes) and sizes[-1] >= 16000 * 3


def test_rollback_prefix_after_the_unfixed_ticks(closing):
    backend, engine = closing(unfixed_ticks=2, rollback_tokens=2)
    d = Driver(backend.open_stream(StreamOptions()))
    for _ in range(6):
        d.feed(tone(2, 0.6))
        d.settle()
    prefixes = [c.request.prefix for c in engine.calls]
    assert prefixes[:2] == ["", ""]
    assert all(p.startswith("language English<asr_text>") for p in prefixes[3:])
    # Each prefix is the previous answer minus two units: the decode only adds the tail.
    assert prefixes[3].endswith(" s2w0") or prefixes[3].endswith("s2w0")
    assert not any(c.mismatch for c in engine.calls)
    with_prefix = [c for c in engine.calls if c.request.prefix]
    assert all(c.request.max_tokens < 32 for c in with_prefix)


def test_final_aborts_the_stale_partial_and_resets_the_segment(closing):
    backend, engine = closing(FakeEngine(base_s=0.5))
    stream = backend.open_stream(StreamOptions())
    d = Driver(stream)
    d.feed(tone(4, 1.0))  # starts a partial decode that will take 0.5 s
    wait_for(lambda: engine.calls)
    in_flight = engine.calls[-1]
    final = stream.finalize()
    assert final.text == words_of(4, 2)
    wait_for(lambda: in_flight.cancelled)
    assert not stream.result_ready and d.wakes == 0  # nothing stale comes back later
    # The next segment starts from nothing: its own audio only, no prefix from before.
    d.feed(tone(5, 1.0))
    d.settle()
    nxt = [c for c in engine.calls if c.started > in_flight.started and "-p" in
           c.request.request_id][0]
    assert nxt.request.prefix == "" and nxt.request.audio.size <= 16000
    assert hear(nxt.request.audio)[0] == 5
    assert stream.finalize().text == words_of(5, 2)


def test_close_aborts_the_decode_in_flight(closing):
    backend, engine = closing(FakeEngine(base_s=5.0))
    stream = backend.open_stream(StreamOptions())
    Driver(stream).feed(tone(1, 0.6))
    wait_for(lambda: engine.calls)
    assert backend.open_streams == 1
    stream.close()
    stream.close()  # idempotent
    wait_for(lambda: engine.calls[-1].cancelled)
    assert backend.open_streams == 0


def test_many_sessions_get_only_their_own_words(closing):
    backend, engine = closing(FakeEngine(base_s=0.02, per_audio_s=0.01))
    streams = [backend.open_stream(StreamOptions()) for _ in range(32)]

    def session(k: int) -> tuple[str, list[str]]:
        d = Driver(streams[k])
        d.feed(tone(k, 2.0 + (k % 3)), frame_ms=100)
        d.settle()
        return streams[k].finalize().text, d.partials

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(session, range(32)))
    for k, (final, partials) in enumerate(results):
        assert final == words_of(k, int((2.0 + k % 3) / 0.5))
        assert all(final.startswith(p) for p in partials)
    ids = [c.request.request_id for c in engine.calls]
    assert len(ids) == len(set(ids))
    assert not any(c.mismatch for c in engine.calls)


def test_forced_language_hotwords_and_unsupported_language(closing):
    backend, engine = closing()
    stream = backend.open_stream(StreamOptions(language="de-AT", hotwords=("Kubernetes", "sttd")))
    d = Driver(stream)
    d.feed(tone(6, 1.5))
    final = stream.finalize()
    assert final.text == words_of(6, 3) and final.language == "de"
    assert all(c.request.language == "German" for c in engine.calls)
    assert all(c.request.context == "Kubernetes sttd" for c in engine.calls)
    with pytest.raises(BackendError, match="does not support language"):
        backend.open_stream(StreamOptions(language="xx"))


def test_hotwords_that_do_not_fit_the_context_are_refused(closing):
    backend, _ = closing(max_context_tokens=5)
    backend.open_stream(StreamOptions(hotwords=("Kubernetes", "sttd"))).close()
    with pytest.raises(BackendError, match="hotwords take 6 tokens"):
        backend.open_stream(StreamOptions(hotwords=tuple("abcdef")))


def test_carried_text_follows_the_hotwords_and_keeps_its_end_when_it_does_not_fit(closing):
    backend, engine = closing(max_context_tokens=5)
    stream = backend.open_stream(StreamOptions(hotwords=("sttd",), context="one two three "
                                               "four five six"))
    d = Driver(stream)
    d.feed(tone(2, 1.5))
    stream.finalize()
    contexts = {c.request.context for c in engine.calls}
    assert contexts == {"sttd three four five six"}, contexts
    short = backend.open_stream(StreamOptions(context="one two"))  # fits: all of it
    d = Driver(short)
    d.feed(tone(2, 1.5))
    short.finalize()
    assert engine.calls[-1].request.context == "one two"


def test_silence_gives_an_empty_final_and_no_language(closing):
    backend, _ = closing()
    stream = backend.open_stream(StreamOptions())
    stream.accept(np.zeros(16000, np.int16))
    final = stream.finalize()
    assert final.empty and final.language is None
    assert stream.finalize().empty  # nothing buffered: no decode at all


def test_a_segment_over_the_cap_is_decoded_in_pieces(closing):
    backend, engine = closing(max_segment_sec=2.0)
    stream = backend.open_stream(StreamOptions())
    audio = np.concatenate([tone(7, 1.8), np.zeros(1600, np.int16), tone(7, 3.0)])
    stream.accept(audio)
    final = stream.finalize()
    finals = [c.request.audio for c in engine.calls if "-f" in c.request.request_id]
    assert len(finals) == 3 and all(piece.size <= 32000 for piece in finals)
    assert sum(piece.size for piece in finals) == audio.size  # nothing left out
    assert finals[0].size == 1.85 * 16000  # cut in the middle of the pause, not at 2.0 s
    assert final.text == " ".join(answer(p, None).partition("<asr_text>")[2] for p in finals)


def test_engine_failures(closing):
    backend, engine = closing(FakeEngine(fail="partial"))
    stream = backend.open_stream(StreamOptions())
    d = Driver(stream)
    d.feed(tone(1, 1.0))
    d.settle()  # a failed decode wakes the session too; collecting it counts the failure
    assert stream.partial_failures >= 1 and not d.partials  # a lost partial is not fatal
    assert stream.finalize().text == words_of(1, 2)
    engine.fail = "final"
    stream.accept(tone(1, 1.0))
    with pytest.raises(BackendError, match="engine error"):
        stream.finalize()


def test_a_final_that_never_comes_times_out(closing):
    backend, engine = closing(FakeEngine(hang_finals=True), final_timeout_sec=0.3)
    outcomes = []
    backend.on_decode = lambda kind, outcome, seconds: outcomes.append((kind, outcome))
    stream = backend.open_stream(StreamOptions())
    stream.accept(tone(1, 1.0))
    with pytest.raises(BackendError, match="no final in 0.3 s") as info:
        stream.finalize()
    assert info.value.retryable
    wait_for(lambda: engine.calls[-1].cancelled)
    assert outcomes == [("final", "timeout")]  # counted as a timeout, not an abort


def test_lifecycle_warmup_health_and_stop():
    engine = FakeEngine()
    backend = Qwen3Backend(engine, "fake", Qwen3Options(warmup=True))
    with pytest.raises(BackendError, match="not running"):
        backend.open_stream(StreamOptions())
    backend.load()
    assert engine.started and engine.calls[0].request.request_id == "warmup"
    assert engine.calls[0].thread == backend.engine.thread.name  # decodes run on its loop
    asyncio.run(backend.check_health())
    engine.healthy = False
    with pytest.raises(RuntimeError, match="engine dead"):
        asyncio.run(backend.check_health())
    stream = backend.open_stream(StreamOptions())
    backend.close()
    assert engine.stopped and not backend.engine.running
    with pytest.raises(RuntimeError, match="not running"):
        asyncio.run(backend.check_health())
    stream.accept(tone(1, 1.0))
    with pytest.raises(BackendError, match="not running"):
        stream.finalize()


def test_the_callers_event_loop_stays_responsive_while_the_engine_loop_blocks(closing):
    """vLLM 0.25 preprocesses synchronously on its loop: that must not be the server's."""
    backend, engine = closing(FakeEngine(base_s=0.01, blocking_s=0.03))
    streams = [backend.open_stream(StreamOptions()) for _ in range(16)]

    async def main() -> float:
        worst = 0.0
        stop = False

        async def heartbeat() -> None:
            nonlocal worst
            while not stop:
                t = time.monotonic()
                await asyncio.sleep(0.005)
                worst = max(worst, time.monotonic() - t - 0.005)

        beat = asyncio.create_task(heartbeat())
        finals = [asyncio.to_thread(lambda s=s, k=k: (s.accept(tone(k, 1.0)), s.finalize())[1])
                  for k, s in enumerate(streams)]
        results = await asyncio.gather(*finals)
        stop = True
        await beat
        assert [r.text for r in results] == [words_of(k, 2) for k in range(16)]
        return worst

    worst = asyncio.run(main())
    blocked = sum(c.ended - c.started for c in engine.calls)
    assert blocked >= 16 * 0.03  # the engine loop really was blocked that long in total
    assert worst < 0.25, f"caller loop stalled {worst:.3f} s"


def test_token_arithmetic_and_context_check():
    assert [audio_tokens(16000 * s) for s in (1, 5, 8, 30, 120)] == [13, 65, 104, 390, 1560]
    assert audio_tokens(8000) == 7
    check_model_len(4096, Qwen3Options())
    with pytest.raises(ValueError, match="too small"):
        check_model_len(512, Qwen3Options(max_segment_sec=30))


def test_settings_are_checked_when_the_backend_is_built():
    from backends.registry import create_backend
    from config import Settings

    remote = {"backend": "qwen3", "qwen3_remote_url": "http://127.0.0.1:9"}
    backend = create_backend(Settings(**remote))  # nothing connects before load()
    assert backend.capabilities.inference_threads == 64
    assert backend.options.max_context_tokens == 4096 - (390 + 40 + 2 * 256)
    with pytest.raises(ValueError, match="STT_QWEN3_MODEL"):
        create_backend(Settings(backend="qwen3"))
    with pytest.raises(ValueError, match="below STT_JOB_TIMEOUT_SEC"):
        create_backend(Settings(**remote, qwen3_final_timeout_sec=90))
    with pytest.raises(ValueError, match="too small"):
        create_backend(Settings(**remote, qwen3_max_model_len=512))
