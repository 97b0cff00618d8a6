"""Deepgram-style latency through live ``/v1/listen``, measured with ``deepgram-sdk``, and the
same audio over native ``/v1/stt/ws`` as a control.

    python -m bench.deepgram [--concurrency 1,4,8] [--duration 45] [--endpointing 300]
                             [--out FILE]

Starts ``sttd serve`` (the embedded default: Whisper tiny.en, Silero VAD) on a free loopback
port; the clients are async connections in this process, on the same two cores. Each stream
plays the English speech clips of ``references/`` back to back (from a different clip per
stream) in 100 ms frames at real-time pace: frame k goes at start + (k + 1) × 100 ms, as a
microphone delivers it; starts are staggered over 1 s. For each concurrency N, three phases of
``--duration`` s each:

``deepgram``: N SDK streams (``linear16`` 16 kHz, ``interim_results``, ``endpointing``,
``utterance_end_ms=1000``, ``vad_events``, ``punctuate``), 1.5 s of silence after each clip.
**End of speech → speech_final**: receive time of a ``speech_final`` result − send time of the
frame holding audio time ``start + duration + endpointing`` (the segment's last voiced audio
plus the silence that ends it: the moment the server could decide). **UtteranceEnd**: its
receive time − send time of the frame at ``last_word_end + 1 s``. **Interim cadence**: gaps
between consecutive interim results of one segment, and SpeechStarted → first interim.

``native``: the same streams over ``/v1/stt/ws`` (``vad_silence_ms`` = ``endpointing``);
end of speech → endpoint ``final`` measured the same way from its ``end_ms``.

Before the server starts, ``calibration`` times this machine: faster-whisper decoding the
11 s JFK clip (tiny.en int8, padded, beam 1), best of 3, on one thread and on all.

``finalize``: N SDK streams with the server's endpointing, each utterance of the clips (from 300 ms
before it to its last word) followed by 200 ms of silence and then ``Finalize`` (as Pipecat sends
it when its Silero VAD, ``stop_secs=0.2``, hears the speaker stop), then 1 s of silence. **Finalize
→ from_finalize**: receive time of the ``from_finalize`` result − send time of ``Finalize``
(results with text; an empty one means the server's endpointing had closed the segment first, and
is counted apart).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

from bench.load import dist
from bench.lossless import Server
from bench.protocols import SPEECH_REFS, deepgram_client
from tests.backends.conformance import FIXTURES

FRAME_S = 0.1
FRAME = int(16000 * FRAME_S) * 2  # bytes of 100 ms of 16 kHz s16


def calibration() -> dict[str, float]:
    """This machine's speed, for scaling the figures: seconds for faster-whisper to decode the
    11 s JFK clip (tiny.en int8, padded to 30 s, beam 1), best of 3, on 1 thread and on all."""
    from faster_whisper import WhisperModel

    from backends.whisper import bundled_model

    audio = FIXTURES["fw_jfk"].pcm().astype("float32") / 32768
    out = {}
    for threads in (1, 0):
        model = WhisperModel(bundled_model(), device="cpu", compute_type="int8",
                             cpu_threads=threads)
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            list(model.transcribe(audio, beam_size=1, language="en")[0])
            best = min(best, time.perf_counter() - t)
        out["jfk_decode_s_1_thread" if threads == 1 else "jfk_decode_s_all_threads"] = round(
            best, 3)
    return out


def clips() -> list[bytes]:
    return [FIXTURES[c].pcm().tobytes() for c in SPEECH_REFS]


def spoken() -> list[bytes]:
    """Each utterance of the clips, from 300 ms before it to its last word (silence after it
    would let the server's endpointing close the segment before a Finalize could)."""
    out = []
    for c in SPEECH_REFS:
        pcm = FIXTURES[c].pcm()
        for u in FIXTURES[c].utterances:
            out.append(pcm[max(0, round((u.start_s - 0.3) * 16000)):round(u.end_s * 16000)]
                       .tobytes())
    return out


class Stream:
    """One client's schedule: frame k goes at ``t0 + (k + 1) × 100 ms``; send times are kept
    to map audio times back to wall time."""

    def __init__(self, conn, t0: float) -> None:
        self.conn = conn
        self.t0 = t0
        self.sent: list[float] = []

    async def send(self, pcm: bytes) -> None:
        for i in range(0, len(pcm), FRAME):
            due = self.t0 + (len(self.sent) + 1) * FRAME_S
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await self.conn.send_media(pcm[i:i + FRAME])
            self.sent.append(time.monotonic())

    def sent_at(self, audio_s: float) -> float | None:
        k = math.floor(audio_s / FRAME_S + 1e-9)
        return self.sent[k] if k < len(self.sent) else None


async def deepgram_stream(http: str, pcms: list[bytes], offset: int, delay: float,
                          until: float, out: dict, endpointing: int) -> None:
    from deepgram.listen.v1.types import ListenV1CloseStream

    await asyncio.sleep(delay)
    async with deepgram_client(http).listen.v1.connect(
            model="nova-3", encoding="linear16", sample_rate=16000, interim_results=True,
            endpointing=endpointing, utterance_end_ms=1000, vad_events=True,
            punctuate=True) as conn:
        stream = Stream(conn, time.monotonic())
        interims: dict[float, list[float]] = defaultdict(list)
        started: list[float] = []

        async def read() -> None:
            async for msg in conn:
                now = time.monotonic()
                kind = getattr(msg, "type", None)
                if kind == "SpeechStarted":
                    started.append(now)
                elif kind == "Results" and not msg.is_final:
                    if not interims[msg.start] and started:
                        out["first_interim_ms"].append((now - started[-1]) * 1000)
                    interims[msg.start].append(now)
                elif kind == "Results" and msg.speech_final:
                    end = msg.start + msg.duration + endpointing / 1000
                    if (t := stream.sent_at(end)) is not None:
                        out["speech_final_ms"].append((now - t) * 1000)
                elif kind == "UtteranceEnd":
                    if (t := stream.sent_at(msg.last_word_end + 1.0)) is not None:
                        out["utterance_end_ms"].append((now - t) * 1000)
                elif kind == "Error":
                    out["errors"].append(msg.description)

        reader = asyncio.create_task(read())
        n = offset
        while time.monotonic() < until:
            await stream.send(pcms[n % len(pcms)] + bytes(48000))  # 1.5 s of silence
            n += 1
        await conn.send_close_stream(ListenV1CloseStream(type="CloseStream"))
        await asyncio.wait_for(reader, 120)
    for times in interims.values():
        out["interim_gap_ms"].extend((b - a) * 1000 for a, b in zip(times, times[1:], strict=False))


async def native_stream(http: str, pcms: list[bytes], offset: int, delay: float,
                        until: float, out: dict, endpointing: int) -> None:
    from websockets.asyncio.client import connect

    await asyncio.sleep(delay)
    url = (http.replace("http", "ws", 1) + f"/v1/stt/ws?call_id=b{offset}&sample_rate=16000"
           f"&vad_silence_ms={endpointing}")
    async with connect(url, max_size=None) as ws:
        stream = Stream(ws, time.monotonic())
        stream.conn.send_media = ws.send

        async def read() -> None:
            async for raw in ws:
                msg = json.loads(raw)
                if msg["type"] == "final" and msg["reason"] == "endpoint":
                    t = stream.sent_at((msg["end_ms"] + endpointing) / 1000)
                    if t is not None:
                        out["final_ms"].append((time.monotonic() - t) * 1000)
                elif msg["type"] == "error":
                    out["errors"].append(msg["message"])

        reader = asyncio.create_task(read())
        n = offset
        while time.monotonic() < until:
            await stream.send(pcms[n % len(pcms)] + bytes(48000))
            n += 1
        await ws.send(json.dumps({"type": "eos"}))
        await asyncio.wait_for(reader, 120)


async def finalize_stream(http: str, pcms: list[bytes], offset: int, delay: float,
                          until: float, out: dict, endpointing: int) -> None:
    from deepgram.listen.v1.types import ListenV1CloseStream, ListenV1Finalize

    await asyncio.sleep(delay)
    async with deepgram_client(http).listen.v1.connect(
            model="nova-3", encoding="linear16", sample_rate=16000, punctuate=True) as conn:
        stream = Stream(conn, time.monotonic())
        asked: list[float] = []

        async def read() -> None:
            async for msg in conn:
                if getattr(msg, "type", None) == "Results" and msg.from_finalize and asked:
                    if msg.channel.alternatives[0].transcript:
                        out["finalize_ms"].append((time.monotonic() - asked.pop(0)) * 1000)
                    else:
                        asked.pop(0)
                        out["finalize_empty"].append(1)

        reader = asyncio.create_task(read())
        n = offset
        while time.monotonic() < until:
            await stream.send(pcms[n % len(pcms)] + bytes(6400))  # + 200 ms: the VAD's stop
            asked.append(time.monotonic())
            await conn.send_finalize(ListenV1Finalize(type="Finalize"))
            await stream.send(bytes(32000))
            n += 1
        await conn.send_close_stream(ListenV1CloseStream(type="CloseStream"))
        await asyncio.wait_for(reader, 120)


PHASES = {"deepgram": deepgram_stream, "native": native_stream, "finalize": finalize_stream}


async def rung(http: str, n: int, duration: float, endpointing: int,
               phases: list[str]) -> dict:
    report: dict = {"streams": n}
    for phase in phases:
        fn = PHASES[phase]
        pcms = spoken() if phase == "finalize" else clips()
        out: dict = defaultdict(list)
        until = time.monotonic() + 1 + duration
        await asyncio.gather(*(fn(http, pcms, i, i / max(1, n), until, out, endpointing)
                               for i in range(n)))
        report[phase] = {k: (dist(v) if k.endswith("_ms") else len(v) if k != "errors" else v)
                         for k, v in sorted(out.items())}
        print(f"{n} streams, {phase}: {json.dumps(report[phase])}", file=sys.stderr)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.deepgram", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", default="1,4,8")
    p.add_argument("--duration", type=float, default=45.0, help="seconds per phase")
    p.add_argument("--endpointing", type=int, default=300, help="ms of silence")
    p.add_argument("--phases", default=",".join(PHASES))
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    t0 = time.monotonic()
    machine = calibration()  # before the server starts: nothing else on the cores
    print(f"calibration: {machine}", file=sys.stderr)
    with Server() as srv:
        rungs = [asyncio.run(rung(srv.http, int(n), args.duration, args.endpointing,
                                  args.phases.split(",")))
                 for n in args.concurrency.split(",")]
    report = {"rungs": rungs, "duration_s": args.duration, "frame_ms": 100,
              "endpointing_ms": args.endpointing, "calibration": machine,
              "wall_s_total": round(time.monotonic() - t0, 1)}
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
