"""Drive the real STT plugins of two voice-agent frameworks against a server, the way their
users do: LiveKit Agents' ``livekit.plugins.openai.STT`` and Pipecat's ``OpenAISTTService`` /
``OpenAIRealtimeSTTService``, pointed at sttd's OpenAI-compatible endpoints by base URL.

Nothing here downloads a model or reaches beyond loopback: LiveKit's plugin gets its aiohttp
session from ``utils.http_context.open()`` (the supported way outside a job worker; no room, no
LiveKit Cloud); a non-realtime-only model (``gpt-4o-transcribe``) makes LiveKit's plugin rely
on the server's VAD, while ``gpt-realtime-whisper`` makes it build ``inference.VAD("silero")``,
which runs natively from the ``livekit-local-inference`` wheel; Pipecat's local VAD is the
Silero ONNX file shipped inside the ``pipecat-ai`` wheel.
``no_remote_connections()`` makes that checkable: any DNS lookup or connect to a non-loopback
address is refused and recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

API_KEY = "test"  # both frameworks refuse an empty key; sttd runs without auth here
_LOOPBACK = {"127.0.0.1", "::1", "localhost", "0.0.0.0"}


def words(text: str) -> list[str]:
    """Lower-case words without punctuation, for content assertions."""
    return re.findall(r"[a-z0-9']+", text.lower())


@contextlib.contextmanager
def no_remote_connections() -> Iterator[list[str]]:
    """Refuse and record every DNS lookup and socket connect that is not loopback (telemetry,
    model hubs, LiveKit Cloud): yields the list of refused destinations."""
    refused: list[str] = []
    real_getaddrinfo, real_connect, real_connect_ex = (
        socket.getaddrinfo, socket.socket.connect, socket.socket.connect_ex)

    def local(host) -> bool:
        host = host.decode() if isinstance(host, bytes) else host
        return host is None or str(host) in _LOOPBACK or str(host).startswith("127.")

    def getaddrinfo(host, *args, **kwargs):
        if not local(host):
            refused.append(f"getaddrinfo {host}")
            raise socket.gaierror(socket.EAI_NONAME, f"test: no remote lookups ({host})")
        return real_getaddrinfo(host, *args, **kwargs)

    def check(sock, address) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not local(address[0]):
            refused.append(f"connect {address}")
            raise ConnectionRefusedError(f"test: no remote connections ({address})")

    def connect(sock, address):
        check(sock, address)
        return real_connect(sock, address)

    def connect_ex(sock, address):
        check(sock, address)
        return real_connect_ex(sock, address)

    socket.getaddrinfo, socket.socket.connect, socket.socket.connect_ex = (
        getaddrinfo, connect, connect_ex)
    try:
        yield refused
    finally:
        socket.getaddrinfo, socket.socket.connect, socket.socket.connect_ex = (
            real_getaddrinfo, real_connect, real_connect_ex)


async def until(predicate, wait_s: float) -> bool:
    """Poll state that framework callbacks update until ``predicate()`` or ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while not predicate() and time.monotonic() < deadline:  # noqa: ASYNC110 - polled state
        await asyncio.sleep(0.05)
    return predicate()


def resample(pcm: np.ndarray, src: int, dst: int) -> np.ndarray:
    if src == dst:
        return pcm
    import soxr

    return soxr.resample(pcm.astype(np.int16), src, dst).astype(np.int16)


# --------------------------------------------------------------------------- LiveKit Agents


@dataclass
class LiveKitRun:
    events: list = field(default_factory=list)  # livekit.agents.stt.SpeechEvent
    errors: list = field(default_factory=list)  # STTError events from the plugin

    def of(self, kind: str) -> list:
        return [e for e in self.events if e.type.value == kind]

    @property
    def finals(self) -> list[str]:
        return [e.alternatives[0].text for e in self.of("final_transcript")]

    @property
    def interims(self) -> list[str]:
        return [e.alternatives[0].text for e in self.of("interim_transcript")]


def livekit_stt(base_url: str, **kwargs):
    from livekit.plugins import openai as lk_openai

    return lk_openai.STT(base_url=base_url, api_key=API_KEY, **kwargs)


def every_turn_completed(run: LiveKitRun) -> bool:
    """The OpenAI plugin's end: each speech_stopped turn has had its completed (usage)."""
    stops = len(run.of("end_of_speech"))
    return (stops >= 1 and stops == len(run.of("start_of_speech"))
            and len(run.of("recognition_usage")) >= stops)


async def livekit_stream(base_url: str, pcm: np.ndarray, rate: int, *, model: str = "",
                         frame_ms: int = 20, speed: float = 1.0, silence_s: float = 1.5,
                         wait_s: float = 30.0, make_stt=None,
                         done=every_turn_completed) -> LiveKitRun:
    """``stt.stream()`` as an agent's audio recognition uses it: push ``rtc.AudioFrame``s at
    ``rate`` (the plugin resamples as it needs) paced like a microphone (``speed`` times real
    time), then silence so the VAD (the server's, or the plugin's own for realtime-only models)
    closes the last turn; wait until ``done(run)``. ``make_stt()`` builds another plugin's STT
    (default: the OpenAI plugin on ``base_url``)."""
    from livekit import rtc
    from livekit.agents import utils

    run = LiveKitRun()
    async with utils.http_context.open():
        stt = (make_stt() if make_stt is not None
               else livekit_stt(base_url, model=model, use_realtime=True, language="en"))
        stt.on("error", run.errors.append)
        stream = stt.stream()

        async def read() -> None:
            async for ev in stream:
                run.events.append(ev)

        reader = asyncio.create_task(read())
        step = rate * frame_ms // 1000
        audio = np.concatenate([pcm, np.zeros(int(rate * silence_s), np.int16)])

        def settled() -> bool:
            return done(run)

        try:
            t0 = time.monotonic()
            for n, i in enumerate(range(0, audio.size, step)):
                if reader.done():  # the stream failed: its exception is raised below
                    break
                chunk = audio[i:i + step]
                try:
                    stream.push_frame(rtc.AudioFrame(chunk.tobytes(), rate, 1, chunk.size))
                except RuntimeError:  # closed by its failure: the reader raises it below
                    await asyncio.wait([reader], timeout=5)
                    break
                delay = t0 + (n + 1) * frame_ms / 1000 / speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await until(lambda: settled() or reader.done(), wait_s)
        finally:
            await stream.aclose()
            await stt.aclose()
            if not reader.done():
                reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    return run


async def livekit_recognize(base_url: str, pcm: np.ndarray, rate: int, *, model: str):
    """``stt.recognize(buffer)``: the plugin's file mode (``use_realtime=False``), one WAV POST
    to ``/v1/audio/transcriptions``; what ``StreamAdapter`` calls per VAD segment."""
    from livekit import rtc
    from livekit.agents import utils

    async with utils.http_context.open():
        stt = livekit_stt(base_url, model=model, use_realtime=False, language="en")
        frames = [rtc.AudioFrame(c.tobytes(), rate, 1, c.size)
                  for c in np.array_split(pcm, max(1, pcm.size // (rate // 10)))]
        try:
            return await stt.recognize(frames)
        finally:
            await stt.aclose()


# --------------------------------------------------------------------------- Pipecat


@dataclass
class PipecatRun:
    finals: list[str] = field(default_factory=list)
    interims: list[str] = field(default_factory=list)
    results: list = field(default_factory=list)  # TranscriptionFrame.result (the raw answer)
    interim_results: list = field(default_factory=list)  # InterimTranscriptionFrame.result
    errors: list[str] = field(default_factory=list)
    vad_starts: int = 0
    vad_stops: int = 0

    @property
    def text(self) -> str:
        return " ".join(self.finals)


def silero_vad(stop_secs: float = 0.8):
    """Pipecat's Silero VAD analyzer (the ONNX model ships in the pipecat-ai wheel)."""
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.audio.vad.vad_analyzer import VADParams

    return SileroVADAnalyzer(params=VADParams(stop_secs=stop_secs))


async def pipecat_run(stt, pcm16k: np.ndarray, *, local_vad: bool = True,
                      frame_ms: int = 20, speed: float = 1.0, silence_s: float = 1.5,
                      wait_s: float = 30.0, done=None) -> PipecatRun:
    """A pipecat user's pipeline minus the transport: [VADProcessor(Silero)], stt, collector in
    a ``PipelineWorker`` run by ``WorkerRunner``; 16 kHz ``InputAudioRawFrame``s are queued as
    an input transport would (paced, 20 ms), then silence; the ``EndFrame`` goes once every
    speech segment has had its transcript, or ``done(run)`` (or ``wait_s``)."""
    from pipecat.frames.frames import (
        EndFrame,
        Frame,
        InputAudioRawFrame,
        InterimTranscriptionFrame,
        ProposedUserStartedSpeakingFrame,
        ProposedUserStoppedSpeakingFrame,
        TranscriptionFrame,
        VADUserStartedSpeakingFrame,
        VADUserStoppedSpeakingFrame,
    )
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.processors.audio.vad_processor import VADProcessor
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    from pipecat.workers.runner import WorkerRunner

    run = PipecatRun()

    class Collector(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection):
            await super().process_frame(frame, direction)
            if isinstance(frame, TranscriptionFrame):
                run.finals.append(frame.text)
                run.results.append(frame.result)
            elif isinstance(frame, InterimTranscriptionFrame):
                run.interims.append(frame.text)
                run.interim_results.append(frame.result)
            elif isinstance(frame, VADUserStartedSpeakingFrame | ProposedUserStartedSpeakingFrame):
                run.vad_starts += 1
            elif isinstance(frame, VADUserStoppedSpeakingFrame | ProposedUserStoppedSpeakingFrame):
                run.vad_stops += 1
            await self.push_frame(frame, direction)

    processors = ([VADProcessor(vad_analyzer=silero_vad())] if local_vad else []) + [
        stt, Collector()]
    rate = 16000
    worker = PipelineWorker(
        Pipeline(processors),
        params=PipelineParams(audio_in_sample_rate=rate, enable_metrics=False,
                              enable_usage_metrics=False),
        enable_rtvi=False, enable_tracing=False, idle_timeout_secs=None,
        cancel_on_idle_timeout=False, check_dangling_tasks=False)
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(_worker, _frame):
        started.set()

    @worker.event_handler("on_pipeline_error")
    async def _error(_worker, frame):
        run.errors.append(frame.error)

    async def feed() -> None:
        await asyncio.wait_for(started.wait(), wait_s)
        step = rate * frame_ms // 1000
        audio = np.concatenate([pcm16k, np.zeros(int(rate * silence_s), np.int16)])
        t0 = time.monotonic()
        for n, i in enumerate(range(0, audio.size, step)):
            if run.errors:
                break
            chunk = audio[i:i + step]
            await worker.queue_frame(InputAudioRawFrame(audio=chunk.tobytes(), sample_rate=rate,
                                                        num_channels=1))
            delay = t0 + (n + 1) * frame_ms / 1000 / speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await until(lambda: bool(run.errors) or (done(run) if done else (
            run.vad_stops >= 1 and run.vad_stops == run.vad_starts
            and len(run.finals) >= run.vad_stops)), wait_s)
        await worker.queue_frame(EndFrame())

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await asyncio.wait_for(asyncio.gather(runner.run(), feed()), wait_s * 2 + 30)
    return run


def pipecat_http_stt(base_url: str, model: str, **kwargs):
    from pipecat.services.openai.stt import OpenAISTTService

    return OpenAISTTService(api_key=API_KEY, base_url=base_url,
                            settings=OpenAISTTService.Settings(model=model), **kwargs)


def pipecat_realtime_stt(ws_url: str, model: str | None = None, **kwargs):
    from pipecat.services.openai.stt import OpenAIRealtimeSTTService

    settings = OpenAIRealtimeSTTService.Settings(model=model) if model else None
    return OpenAIRealtimeSTTService(api_key=API_KEY, base_url=ws_url, settings=settings,
                                    **kwargs)


def pipecat_deepgram_stt(ws_base: str, **settings):
    """Pipecat's ``DeepgramSTTService(base_url=...)`` (it derives the SDK's environment)."""
    from pipecat.services.deepgram.stt import DeepgramSTTService

    return DeepgramSTTService(api_key=API_KEY, base_url=ws_base,
                              settings=DeepgramSTTService.Settings(**settings))
