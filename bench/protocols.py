"""The same recognition through every protocol sttd serves: accuracy, latency and per-frame cost.

    python -m bench.protocols wer  [--speed 0] [--out FILE]    # Whisper, one server, 7 protocols
    python -m bench.protocols load [--concurrency 32,64] [--frame-ms 20,100] [--out FILE]
    python -m bench.protocols cost                              # parse cost per frame (timeit)

Each command starts its own ``sttd serve`` on a free loopback port (``wer --url``: a running one),
so server and clients share the machine's cores.

``wer``: every English clip of ``../shared/eval`` (``bench.wer``'s manifest, references, normaliser
and jiwer) through (1) ``/v1/stt/ws`` (``bench.wer.stream_clip``: 100 ms frames, 1 s of trailing
silence, eos), (2) ``POST /v1/stt/transcribe`` and (3) ``POST /v1/audio/transcriptions``
(``openai`` SDK, ``whisper-1``), both with the original file, and (4) ``/v1/realtime`` (``openai``
SDK, server VAD 0.5 / 300 ms / 500 ms, the server's own defaults), (5) live ``/v1/listen``
(``deepgram-sdk``, linear16 16 kHz in 100 ms frames, the server's endpointing, 1 s of silence,
``CloseStream``), (6) pre-recorded ``POST /v1/listen`` with the file and (7)
kaldi-gstreamer-server's own ``client.py`` (``kgs_client``: Python 2.7 from ``make test``'s
``.venv/py27``; the clip + 1 s of silence as a WAV, ``-r 256000``). For (4): the 16 kHz clip
resampled to 24 kHz (soxr), 1.5 s of silence added, appended in 100 ms chunks; then a second
``session.update`` as a barrier (updates apply in order with the audio), and every item that had
``speech_started`` is awaited to its ``completed``; the transcripts are joined with spaces in
commit order. A control, ``native_ws_24k``, streams that same 24 kHz audio over ``/v1/stt/ws``
(``sample_rate=24000``): it separates what the audio path (resampling) changes from what the
protocol changes. ``--speed 0`` sends as fast as the server takes it (sttd is lossless for clients
ahead of real time), so segmentation is that of real-time pace.

``load``: the mock backend (``STT_MOCK_TOLERANT=true``: resampled audio is located by its energy
envelope, ~1.4 ms once per segment), energy VAD, one server. For each frame size and N, three
rungs one after the other: N realtime sessions; ``native_24k``, N native sessions sending the
same 24 kHz audio as binary frames (``sample_rate=24000``: the resampling without the JSON); and
N native sessions at 16 kHz (``bench.load``, same clips and seed). A 24 kHz client streams the
English speech clips of ``references/`` back to back (1 s of silence after each, from a seeded
random clip), resampled to 24 kHz, at real-time pace (absolute schedule, starts staggered over
1 s) as pre-serialised, pre-masked frames (as ``bench.load`` sends its binary frames), for
``--duration`` s. Final latency of an item = receive time of its ``completed`` (native: an
endpoint ``final``) − send time of the frame carrying the 24 kHz audio at ``audio_end_ms`` (of
its ``speech_stopped``; native: ``end_ms``) + ``silence_duration_ms`` (rounded up to the 20 ms
VAD frame): the moment the endpointer could close it, as ``bench.load`` defines it for native
finals. That includes whatever the server's streaming resampler holds back between calls
(soxr HQ before 5bb5886: 6-37 ms of output; 1 sample at 5bb5886; none since fdafbbe);
``final_after_resampler_ms`` starts instead at the frame after which the resampler had emitted
the endpoint sample (replayed here through the server's own ``RawDecoder``: output counts
depend only on the chunk sizes). Server CPU is psutil over the window in which every client
streams (100 % = one core).

``cost``: single-thread ``timeit`` of what the server does per audio frame before the
endpointer: the wire's ``parse`` (realtime: ``json.loads`` + ``base64.b64decode``), UTF-8 decoding
of a text frame, and the server's raw decoder (realtime: s16 → float → 24 → 16 kHz → s16;
native 16 kHz: a pass-through).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import json
import os
import random
import sys
import time
import timeit
from collections import defaultdict
from functools import partial
from pathlib import Path

import numpy as np
import psutil
import soxr

from bench.load import dist, load_playlist, ws_binary_frame
from bench.load import main as native_load
from bench.lossless import EVAL, Server
from bench.wer import FORMAT_BOUND, NATURAL, NORMALISE, batch_texts, load_manifest, reference, wer
from bench.wer import stream_clip as native_stream
from client.stream import read_pcm16k, stream_pcm
from protocol.audio import RawDecoder

PROTOCOLS = ("native_ws", "native_batch", "openai_batch", "openai_realtime", "deepgram_live",
             "deepgram_batch", "kgs_client")
REPO = Path(__file__).resolve().parent.parent
KGS_CLIENT = REPO / "tests" / "kgs" / "client.py"  # kaldi-gstreamer-server's own, Python 2.7
PY27 = REPO / ".venv" / "py27" / "bin" / "python"  # built by make test
CONTROL = "native_ws_24k"  # the realtime run's 24 kHz audio over /v1/stt/ws: audio vs protocol
SPEECH_REFS = ("fw_jfk", "ep_lj001_0002_0003_pause2p5", "ep_ls_three_turns_pause4",
               "fleurs_en_004", "ls_6930_75918_0000", "lj_LJ001-0001")  # English in references/
VAD = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
       "silence_duration_ms": 500}
SESSION = {"type": "transcription", "audio": {"input": {
    "format": {"type": "audio/pcm", "rate": 24000},
    "transcription": {"model": "whisper-1"}, "turn_detection": VAD}}}


def to24k(pcm16: bytes) -> bytes:
    x = np.frombuffer(pcm16, "<i2").astype(np.float32) / 32768
    return (soxr.resample(x, 16000, 24000, quality="HQ").clip(-1, 1) * 32767).astype(
        "<i2").tobytes()


def append_event(chunk: bytes) -> str:
    return json.dumps({"type": "input_audio_buffer.append",
                       "audio": base64.b64encode(chunk).decode()})


# -- wer ---------------------------------------------------------------------------------------

async def realtime_text(http: str, pcm16: bytes, speed: float) -> str:
    """One clip through /v1/realtime with the openai SDK; transcripts joined in commit order."""
    from openai import AsyncOpenAI

    pcm = to24k(pcm16) + bytes(2 * 36000)  # 1.5 s of silence: the last turn ends
    client = AsyncOpenAI(base_url=http + "/v1", api_key="x", max_retries=0)
    started, order, done, updated = set(), [], {}, 0
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.session.update(session=SESSION)
        t0, step = time.monotonic(), 4800  # 100 ms of 24 kHz s16
        for n, i in enumerate(range(0, len(pcm), step)):
            if speed:
                await asyncio.sleep(max(0.0, t0 + n * 0.1 / speed - time.monotonic()))
            await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i:i + step]).decode())
        await conn.session.update(session=SESSION)  # barrier: answered after all the audio
        while updated < 2 or started - done.keys():
            ev = json.loads(await asyncio.wait_for(conn.recv_bytes(), 120))
            kind = ev["type"]
            if kind == "session.updated":
                updated += 1
            elif kind == "input_audio_buffer.speech_started":
                started.add(ev["item_id"])
            elif kind == "input_audio_buffer.committed":
                order.append(ev["item_id"])
            elif kind == "conversation.item.input_audio_transcription.completed":
                done[ev["item_id"]] = ev["transcript"]
            elif kind in ("error", "conversation.item.input_audio_transcription.failed"):
                print(f"realtime event: {json.dumps(ev)}", file=sys.stderr)
                if kind.endswith("failed"):
                    done[ev["item_id"]] = ""
    return " ".join(t for t in (done.get(i, "") for i in order) if t)


def deepgram_client(http: str):
    from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment

    ws = http.replace("http", "ws", 1)
    return AsyncDeepgramClient(api_key="x", environment=DeepgramClientEnvironment(
        base=http, production=ws, agent=ws, agent_rest=http))


async def deepgram_live_text(http: str, pcm16: bytes, speed: float) -> str:
    """One clip through live /v1/listen with deepgram-sdk (server's endpointing, punctuate):
    100 ms binary frames, 1 s of silence, CloseStream; the is_final transcripts joined."""
    from deepgram.listen.v1.types import ListenV1CloseStream

    pcm = pcm16 + bytes(32000)
    finals: list[str] = []
    async with deepgram_client(http).listen.v1.connect(
            model="nova-3", encoding="linear16", sample_rate=16000, punctuate=True) as conn:
        async def read() -> None:
            async for msg in conn:
                if getattr(msg, "type", None) == "Results" and msg.is_final:
                    finals.append(msg.channel.alternatives[0].transcript)

        reader = asyncio.create_task(read())
        t0, step = time.monotonic(), 3200
        for n, i in enumerate(range(0, len(pcm), step)):
            if speed:
                await asyncio.sleep(max(0.0, t0 + n * 0.1 / speed - time.monotonic()))
            await conn.send_media(pcm[i:i + step])
        await conn.send_close_stream(ListenV1CloseStream(type="CloseStream"))
        await asyncio.wait_for(reader, 600)
    return " ".join(t for t in finals if t)


async def deepgram_batch_texts(http: str, clips: list[dict], audio_dir: Path) -> dict[str, str]:
    client = deepgram_client(http)
    out = {}
    for clip in clips:
        r = await client.listen.v1.media.transcribe_file(
            request=(audio_dir / clip["audio"]).read_bytes(), model="nova-3", punctuate=True,
            request_options={"timeout_in_seconds": 600, "max_retries": 0})
        out[clip["id"]] = r.results.channels[0].alternatives[0].transcript
    return out


async def kgs_client_texts(http: str, clips: list[dict], audio_dir: Path) -> dict[str, str]:
    """kaldi-gstreamer-server's ``client.py`` (Python 2.7, ws4py) per clip: the same PCM as
    the native stream (the clip + 1 s of silence) as a WAV file, so ``content-type`` is empty
    and the container sniffed, sent at ``-r 256000`` (8 × real time in 64 000-byte blocks,
    under the 64 KiB frame limit; sttd holds a client that is ahead instead of dropping its
    audio). Its stdout is the finals joined."""
    import tempfile
    import wave

    url = http.replace("http", "ws", 1) + "/client/ws/speech"
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for clip in clips:
            path = Path(tmp) / f"{clip['id']}.wav"
            with wave.open(str(path), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(16000)
                w.writeframes(read_pcm16k(audio_dir / clip["audio"]) + bytes(32000))
            proc = await asyncio.create_subprocess_exec(
                str(PY27), str(KGS_CLIENT), "-u", url, "-r", "256000", str(path),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
            stdout, _ = await asyncio.wait_for(proc.communicate(), 600)
            out[clip["id"]] = stdout.decode().strip()
    return out


async def openai_batch_texts(http: str, clips: list[dict], audio_dir: Path) -> dict[str, str]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=http + "/v1", api_key="x", max_retries=0, timeout=600)
    out = {}
    for clip in clips:
        path = audio_dir / clip["audio"]
        r = await client.audio.transcriptions.create(model="whisper-1",
                                                     file=(path.name, path.read_bytes()))
        out[clip["id"]] = r.text
    return out


async def run_wer(args: argparse.Namespace, http: str) -> dict:
    audio_dir = args.audio_dir
    clips = [c for c in load_manifest(audio_dir) if c["language"] in ("en", "und")]
    ws = http.replace("http", "ws", 1) + "/v1/stt/ws"
    sem = asyncio.Semaphore(args.parallel)

    async def each(fn) -> dict[str, str]:
        async def one(clip):
            async with sem:
                return clip["id"], await fn(clip)
        return dict(await asyncio.gather(*(one(c) for c in clips)))

    async def ws_text(clip):
        r = await native_stream(ws, clip, audio_dir, args.speed)
        return " ".join(f["text"] for f in r["finals"] if f["text"])

    async def rt_text(clip):
        return await realtime_text(http, read_pcm16k(audio_dir / clip["audio"]), args.speed)

    async def ws24_text(clip):
        pcm = to24k(read_pcm16k(audio_dir / clip["audio"])) + bytes(2 * 36000)
        finals = [m["text"] async for m in stream_pcm(ws, pcm, speed=args.speed, step=4800,
                                                      params={"sample_rate": 24000})
                  if m["type"] == "final" and m["text"]]
        return " ".join(finals)

    async def dg_text(clip):
        return await deepgram_live_text(http, read_pcm16k(audio_dir / clip["audio"]),
                                        args.speed)

    runs = {"native_ws": lambda: each(ws_text),
            "deepgram_live": lambda: each(dg_text),
            "deepgram_batch": lambda: deepgram_batch_texts(http, clips, audio_dir),
            "kgs_client": lambda: kgs_client_texts(http, clips, audio_dir),
            "native_batch": lambda: batch_texts(ws, clips, audio_dir),
            "openai_batch": lambda: openai_batch_texts(http, clips, audio_dir),
            "openai_realtime": lambda: each(rt_text), CONTROL: lambda: each(ws24_text)}
    texts, wall = {}, {}
    for name in args.protocols:
        t = time.monotonic()
        texts[name] = await runs[name]()
        wall[name] = round(time.monotonic() - t, 1)
        print(f"{name}: {wall[name]} s", file=sys.stderr)
    natural = [c for c in clips if c["kind"] in NATURAL]
    kinds = sorted({c["kind"] for c in clips} - {"silence", "noise"})
    report: dict = {"clips": len(clips), "natural_clips": len(natural),
                    "audio_s": round(sum(c["duration_s"] for c in clips), 1), "speed": args.speed,
                    "wall_s": wall, "wer": {}}
    for name, t in texts.items():
        report["wer"][name] = {
            "natural": round(wer([(reference(c), t[c["id"]]) for c in natural]) * 100, 2),
            "natural_without_numbers": round(wer([(reference(c), t[c["id"]]) for c in natural
                                                  if c["kind"] not in FORMAT_BOUND]) * 100, 2),
            "by_kind": {k: round(wer([(reference(c), t[c["id"]]) for c in clips
                                      if c["kind"] == k]) * 100, 2) for k in kinds},
            "words_on_silence_and_noise": sum(len(t[c["id"]].split()) for c in clips
                                              if c["kind"] in ("silence", "noise")),
        }
    norm = {name: {i: NORMALISE(x) for i, x in t.items()} for name, t in texts.items()}
    names, main4 = list(norm), [n for n in norm if n in PROTOCOLS]
    report["identical_all"] = {"protocols": main4, "clips": sum(
        len({norm[n][c["id"]] for n in main4}) == 1 for c in clips)}
    report["identical_pairs"] = {f"{a}={b}": sum(norm[a][c["id"]] == norm[b][c["id"]]
                                                 for c in clips)
                                 for i, a in enumerate(names) for b in names[i + 1:]}
    report["differing"] = [{"id": c["id"], "kind": c["kind"], **{n: texts[n][c["id"]]
                                                                 for n in names}}
                           for c in clips if len({norm[n][c["id"]] for n in names}) > 1]
    return report


# -- load --------------------------------------------------------------------------------------

class Rung24k:
    """N sessions of 24 kHz audio at real-time pace: realtime appends or, with ``binary``, the
    same audio as native binary frames (``sample_rate=24000``); final latency, server and
    load-generator CPU."""

    def __init__(self, base: str, n: int, frame_ms: int, duration: float, seed: int,
                 binary: bool = False) -> None:
        playlist = load_playlist(EVAL, None, None, set(SPEECH_REFS), frame_ms, 1000)
        pcm = to24k(b"".join(playlist.frames))
        step = frame_ms * 48  # bytes of 24 kHz s16
        mask = os.urandom(4)
        chunks = [pcm[i:i + step] for i in range(0, len(pcm) - step + 1, step)]
        if binary:
            self.wire = [ws_binary_frame(c, mask) for c in chunks]
            self.url = f"{base}/stt/ws?sample_rate=24000&frame_ms={frame_ms}&call_id=r"
        else:  # opcode 1: text
            self.wire = [b"\x81" + ws_binary_frame(append_event(c).encode(), mask)[1:]
                         for c in chunks]
            self.url = f"{base}/realtime?intent=transcription"
        self.binary = binary
        rng = random.Random(seed)
        self.starts = [rng.choice(playlist.clip_starts) for _ in range(n)]
        self.n, self.frame_ms, self.duration = n, frame_ms, duration
        self.sil_ms = -(-VAD["silence_duration_ms"] // 20) * 20
        # Samples of 16 kHz audio the server's own decoder has emitted after frame k.
        decoder, total, self.emitted = RawDecoder("pcm_s16le", 24000), 0, []
        for _ in range(int(duration * 1000 / frame_ms) + 1):
            total += len(decoder.decode(bytes(step))) // 2
            self.emitted.append(total)
        self.final_ms, self.after_resampler_ms, self.errors = [], [], []
        self.counts: dict[str, int] = defaultdict(int)

    async def run(self, server_pid: int) -> dict:
        from websockets.asyncio.client import connect

        conns = []
        for _ in range(self.n):
            ws = await connect(self.url, max_size=None, ping_interval=None, compression=None,
                               additional_headers={"Authorization": "Bearer x"})
            await ws.recv()  # session.created / ready
            if not self.binary:
                await ws.send(json.dumps({"type": "session.update", "session": SESSION}))
                await ws.recv()  # session.updated
            conns.append(ws)
        server, me = psutil.Process(server_pid), psutil.Process()
        t_go = time.monotonic() + 0.5
        tasks = [asyncio.create_task(self.session(ws, t_go + i / self.n, first, send_lag))
                 for i, (ws, first) in enumerate(zip(conns, self.starts, strict=True))
                 for send_lag in [[]]]
        await asyncio.sleep(t_go + 1.0 - time.monotonic())  # every client streams from here
        cpu0 = [sum(p.cpu_times()[:2]) for p in (server, me)]
        w0 = time.monotonic()
        await asyncio.sleep(self.duration - 1.0)
        cpu1 = [sum(p.cpu_times()[:2]) for p in (server, me)]
        window = time.monotonic() - w0
        lags = [x for lag in await asyncio.gather(*tasks) for x in lag]
        return {"clients": self.n, "frame_ms": self.frame_ms,
                "frames_per_s": round(self.n * 1000 / self.frame_ms),
                "final_ms": dist(self.final_ms),
                "final_after_resampler_ms": dist(self.after_resampler_ms),
                "server_cpu_pct": round((cpu1[0] - cpu0[0]) / window * 100, 1),
                "loadgen_cpu_pct": round((cpu1[1] - cpu0[1]) / window * 100, 1),
                "send_lag_ms": dist(lags), "counts": dict(self.counts),
                "errors": self.errors[:10]}

    async def session(self, ws, t0: float, first: int, send_lag: list[float]) -> list[float]:
        sent: list[float] = []
        reader = asyncio.create_task(self.receive(ws, sent))
        period, write, k = self.frame_ms / 1000, ws.transport.write, first
        frames = int(self.duration * 1000 / self.frame_ms)
        for n in range(frames):
            delay = t0 + n * period - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent.append(time.monotonic())
            send_lag.append((sent[-1] - t0 - n * period) * 1000)
            write(self.wire[k])
            k = (k + 1) % len(self.wire)
        await asyncio.sleep(1.5)  # finals of segments the audio has closed
        reader.cancel()
        await ws.close()
        self.counts[f"close_{ws.close_code}"] += 1
        return send_lag

    async def receive(self, ws, sent: list[float]) -> None:
        stopped: dict[str, int] = {}
        per = self.frame_ms * 16  # 16 kHz samples per append
        async for raw in ws:
            t = time.monotonic()
            ev = json.loads(raw)
            kind = ev["type"]
            self.counts[kind] += 1
            if kind == "input_audio_buffer.speech_stopped":
                stopped[ev["item_id"]] = ev["audio_end_ms"]
            elif kind in ("conversation.item.input_audio_transcription.completed", "final"):
                end = ev["end_ms"] if ev.get("reason") == "endpoint" else stopped.pop(
                    ev.get("item_id"), None)
                if end is None:
                    continue
                sample = (end + self.sil_ms) * 16 - 1  # the last one the endpoint needed
                idx = sample // per
                late = bisect.bisect_right(self.emitted, sample)
                if late >= len(sent):
                    self.counts["completed_past_the_audio"] += 1
                    continue
                self.final_ms.append((t - sent[idx]) * 1000)
                self.after_resampler_ms.append((t - sent[late]) * 1000)
            elif kind in ("error", "warning",
                          "conversation.item.input_audio_transcription.failed"):
                self.errors.append(ev)


def run_load(args: argparse.Namespace) -> dict:
    env = {"STT_BACKEND": "mock", "STT_MOCK_TOLERANT": "true", "STT_VAD": "energy",
           "STT_MAX_SESSIONS": "3000", "STT_IDLE_TIMEOUT_SEC": "120"}
    rows = []
    with Server(**env) as srv:
        base = f"ws://127.0.0.1:{srv.port}/v1"
        for frame_ms in args.frame_ms:
            for n in args.concurrency:
                row = {}
                for name, binary in (("realtime", False), ("native_24k", True)):
                    rung = Rung24k(base, n, frame_ms, args.duration, args.seed, binary)
                    row[name] = asyncio.run(rung.run(srv.proc.pid))
                    time.sleep(3)
                out = Path(f"/tmp/bench-protocols-native-{os.getpid()}.json")
                native_load(["--url", base + "/stt/ws", "--ids", ",".join(SPEECH_REFS),
                             "--concurrency", str(n), "--duration", str(args.duration),
                             "--frame-ms", str(frame_ms), "--server-pid", str(srv.proc.pid),
                             "--no-stop", "--seed", str(args.seed), "--out", str(out)])
                r = json.loads(out.read_text())["rungs"][0]
                row["native"] = {"clients": n, "frame_ms": frame_ms,
                                 "frames_per_s": r["frames_per_s"], "final_ms": r["final_ms"],
                                 "server_cpu_pct": (r["server"] or {}).get("cpu_pct"),
                                 "loadgen_cpu_pct": r["loadgen"]["cpu_pct"],
                                 "errors": r["errors"], "drops": r["counts"]["warnings"]}
                rows.append(row)
                for side in ("realtime", "native_24k", "native"):
                    s, f = row[side], row[side]["final_ms"]
                    print(f"{side:10} N={n:<4} {frame_ms:>3} ms  final p50/p95/p99 "
                          f"{f.get('p50')}/{f.get('p95')}/{f.get('p99')} ms (n={f['n']})  "
                          f"server CPU {s['server_cpu_pct']} %  lg CPU {s['loadgen_cpu_pct']} %",
                          file=sys.stderr)
                time.sleep(3)
    return {"rungs": rows, "duration_s": args.duration, "cpus": os.cpu_count()}


# -- cost --------------------------------------------------------------------------------------

def _us(fn) -> float:
    """Best of 5 timeit runs, µs per call."""
    n, t = timeit.Timer(fn).autorange()
    return round(min([t] + timeit.repeat(fn, number=n, repeat=4)) / n * 1e6, 2)


def run_cost(args: argparse.Namespace) -> dict:
    from config import Settings
    from protocol.native import NativeProtocol
    from protocol.openai_realtime import OpenAIRealtimeProtocol

    pcm16 = read_pcm16k(EVAL / "audio" / "fw_jfk.wav")
    pcm24 = to24k(pcm16)
    rt = OpenAIRealtimeProtocol().handshake({}, {}, Settings())
    native = NativeProtocol().handshake({"call_id": "c", "sample_rate": "16000"}, {},
                                        Settings())
    out = {}
    for ms in (20, 100):
        b16, b24 = pcm16[32000:32000 + ms * 32], pcm24[48000:48000 + ms * 48]
        text = append_event(b24)
        row = {
            "binary_bytes": len(b16), "append_chars": len(text),
            "native_parse_us": _us(partial(native.parse, b16)),
            "native_decode_us": _us(partial(RawDecoder("pcm_s16le", 16000).decode, b16)),
            "utf8_decode_us": _us(partial(text.encode().decode)),
            "json_loads_us": _us(partial(json.loads, text)),
            "b64decode_us": _us(partial(base64.b64decode, json.loads(text)["audio"],
                                        validate=True)),
            "realtime_parse_us": _us(partial(rt.parse, text)),
            "resample_24k_to_16k_us": _us(partial(RawDecoder("pcm_s16le", 24000).decode, b24)),
        }
        row["realtime_total_us"] = round(row["utf8_decode_us"] + row["realtime_parse_us"]
                                         + row["resample_24k_to_16k_us"], 2)
        row["native_total_us"] = round(row["native_parse_us"] + row["native_decode_us"], 2)
        out[f"{ms}ms"] = row
    return out


# -- CLI ---------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.protocols", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("wer", help="WER through each protocol (Whisper, default settings)")
    w.add_argument("--url", help="http://HOST:PORT of a running server (default: start one)")
    w.add_argument("--audio-dir", type=Path, default=EVAL)
    w.add_argument("--speed", type=float, default=0.0, help="streams: 1 = real time, 0 = fast")
    w.add_argument("--parallel", type=int, default=1, help="streams at once")
    w.add_argument("--protocols", default=",".join((*PROTOCOLS, CONTROL)))
    ld = sub.add_parser("load", help="realtime vs native, mock backend, real-time pace")
    ld.add_argument("--concurrency", default="32,64")
    ld.add_argument("--frame-ms", default="20,100")
    ld.add_argument("--duration", type=float, default=30.0)
    ld.add_argument("--seed", type=int, default=1)
    sub.add_parser("cost", help="per-frame parse and resample cost (timeit)")
    for sp in sub.choices.values():
        sp.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    t0 = time.monotonic()
    if args.command == "wer":
        args.protocols = args.protocols.split(",")
        if set(args.protocols) - {*PROTOCOLS, CONTROL}:
            p.error(f"--protocols: choose from {', '.join((*PROTOCOLS, CONTROL))}")
        if args.url:
            report = asyncio.run(run_wer(args, args.url.rstrip("/")))
        else:
            with Server() as srv:
                report = asyncio.run(run_wer(args, srv.http))
    elif args.command == "load":
        args.concurrency = [int(x) for x in args.concurrency.split(",")]
        args.frame_ms = [int(x) for x in args.frame_ms.split(",")]
        report = run_load(args)
    else:
        report = run_cost(args)
    report["wall_s_total"] = round(time.monotonic() - t0, 1)
    text = json.dumps(report, indent=1, ensure_ascii=False)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
