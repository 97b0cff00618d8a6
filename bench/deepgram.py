"""Deepgram-style latency through live ``/v1/listen``, measured with ``deepgram-sdk``.

    python -m bench.deepgram [--concurrency 1,8] [--duration 60] [--out FILE]

Starts ``sttd serve`` (the embedded default: Whisper tiny.en, Silero VAD) on a free loopback
port; the clients are async SDK connections in this process, on the same two cores. For each
concurrency N, two phases of ``--duration`` s each:

``endpointing``: N streams (``linear16`` 16 kHz, ``interim_results``, ``endpointing=300``,
``utterance_end_ms=1000``, ``vad_events``, ``punctuate``), each playing the English speech clips
of ``references/`` back to back with 1.5 s of silence after each, in 100 ms frames at real-time
pace (frame k of a stream goes at start + (k + 1) × 100 ms, as a microphone delivers it; starts
staggered over 1 s). Measured: **end of speech → speech_final**: receive time of a
``speech_final`` result − send time of the frame holding audio time ``start + duration + 0.3
s`` (the segment's last voiced audio plus the endpointing silence: the moment the server could
decide); **UtteranceEnd**: its receive time − send time of the frame at ``last_word_end + 1
s``; **interim cadence**: the gaps between consecutive interim results of one segment, and
SpeechStarted → first interim.

``finalize``: N streams with ``endpointing=false``, each clip's audio at real-time pace, then
``Finalize`` at once (as Pipecat sends it when its VAD hears the speaker stop), then 1 s of
silence. Measured: **Finalize → from_finalize**: receive time of the ``from_finalize`` result −
send time of ``Finalize``.
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


def clips() -> list[bytes]:
    return [FIXTURES[c].pcm().tobytes() for c in SPEECH_REFS]


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


async def endpointing_stream(http: str, pcms: list[bytes], offset: int, delay: float,
                             until: float, out: dict) -> None:
    from deepgram.listen.v1.types import ListenV1CloseStream

    await asyncio.sleep(delay)
    async with deepgram_client(http).listen.v1.connect(
            model="nova-3", encoding="linear16", sample_rate=16000, interim_results=True,
            endpointing=300, utterance_end_ms=1000, vad_events=True, punctuate=True) as conn:
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
                    end = msg.start + msg.duration + 0.3
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


async def finalize_stream(http: str, pcms: list[bytes], offset: int, delay: float,
                          until: float, out: dict) -> None:
    from deepgram.listen.v1.types import ListenV1CloseStream, ListenV1Finalize

    await asyncio.sleep(delay)
    async with deepgram_client(http).listen.v1.connect(
            model="nova-3", encoding="linear16", sample_rate=16000, endpointing=False,
            punctuate=True) as conn:
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
            await stream.send(pcms[n % len(pcms)])
            asked.append(time.monotonic())
            await conn.send_finalize(ListenV1Finalize(type="Finalize"))
            await stream.send(bytes(32000))
            n += 1
        await conn.send_close_stream(ListenV1CloseStream(type="CloseStream"))
        await asyncio.wait_for(reader, 120)


async def rung(http: str, n: int, duration: float) -> dict:
    pcms = clips()
    report: dict = {"streams": n}
    for phase, fn in (("endpointing", endpointing_stream), ("finalize", finalize_stream)):
        out: dict = defaultdict(list)
        until = time.monotonic() + 1 + duration
        await asyncio.gather(*(fn(http, pcms, i, i / max(1, n), until, out) for i in range(n)))
        report[phase] = {k: (dist(v) if k.endswith("_ms") else len(v) if k != "errors" else v)
                         for k, v in sorted(out.items())}
        print(f"{n} streams, {phase}: {json.dumps(report[phase])}", file=sys.stderr)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.deepgram", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", default="1,8")
    p.add_argument("--duration", type=float, default=60.0, help="seconds per phase")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    t0 = time.monotonic()
    with Server() as srv:
        rungs = [asyncio.run(rung(srv.http, int(n), args.duration))
                 for n in args.concurrency.split(",")]
    report = {"rungs": rungs, "duration_s": args.duration, "frame_ms": 100,
              "wall_s_total": round(time.monotonic() - t0, 1)}
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
