"""sttd against WhisperLive in one run: same machine, same client, same model, same audio.

WhisperLive (collabora's ``whisper-live`` 0.10.0 from PyPI) serves with its faster-whisper
backend. It uses the model directory sttd embeds (Whisper tiny.en, CTranslate2 int8) and is
started as its ``run_server.py`` starts it (``-fw <dir>``: one shared model, ``OMP_NUM_THREADS=1``).
``max_clients`` is raised to the largest rung, because its default of 4 answers WAIT to the
rest. ``--whisperlive-omp 2`` adds a second WhisperLive run with both cores.

sttd runs as ``sttd serve`` with its defaults: the embedded CPU default, nothing tuned. The
servers run side by side, each rung goes to one at a time, and which one goes first alternates
by rung (ABBA), so drift on the machine falls on both.

One client drives both servers:
* Every stream plays English eval clips back to back, each followed by ``--gap-ms`` of
  silence and all of them whole, until ``--duration`` s have been played, then ``--tail-s`` s
  of silence. Every stream starts at a seeded clip, and stream i of a rung plays the same
  audio to both servers.
* Audio is sent in real time in WhisperLive's client chunk (4096 samples, 256 ms). Its
  client sends float32 and sttd takes s16le; the samples are the same.
* Session set-up is each server's own. WhisperLive gets its client's options message with
  every default (``Client.on_open``) and starts once SERVER_READY arrives. sttd gets
  ``/v1/stt/ws?sample_rate=16000``.
* At the end, WhisperLive gets ``END_OF_AUDIO`` and sttd gets ``{"type":"eos"}``.

What a caller sees is scored the same way for both, from the stream's own timeline:

* **final after end of speech**: per clip, the arrival of the last final the clip owns (a
  final whose midpoint lies in the clip's stretch of the stream) − the time the client sent
  the clip's last speech sample (Silero VAD on the clean clip, no padding). The final must
  reach the end of the speech (end ≥ speech end − 1 s); if not, the clip counts as
  *unfinished*. For sttd, a final is a ``final`` message. For WhisperLive it is a segment
  that arrives with ``completed: true``, kept as its client keeps them (``process_segments``:
  one starting before the last kept one's end is a repeat and is dropped).
* **partial lag**: each partial whose text differs from the one before it: its arrival − the
  send time of the audio at the partial's own reported end (sttd ``end_ms``; WhisperLive the
  open segment's ``end``). WhisperLive resends an unchanged open segment on every decode
  pass (through pauses too); those repeats carry nothing new and are not scored.
* **update gap**: within each clip's speech, the gaps between messages that carry
  transcript, from speech start to speech end (a stream that hears nothing for 4 s of
  speech shows a 4 s gap).
* **WER**: per stream, the finals in order against the references of the clips it played,
  with Whisper's English normaliser, pooled over streams. For WhisperLive the open segment
  is appended at the end, as its client does (``write_srt_file``).

    python -m bench.whisperlive --setup      # the WhisperLive venv (PyPI; torch from disk)
    python -m bench.whisperlive --concurrency 1,2,4,8 --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np

from config import REPO_ROOT

RATE = 16000
CHUNK = 4096  # WhisperLive's client chunk (TranscriptionTeeClient.chunk)
CHUNK_S = CHUNK / RATE
EVAL = REPO_ROOT.parent / "shared" / "eval"
KINDS = {"read", "command", "conversational", "long-form"}  # bench.wer's natural English kinds
VENV = REPO_ROOT / ".bench" / "whisperlive"
# What WhisperLive's faster-whisper path imports, at its pins where it pins. Not its full
# requirement list: that pulls openvino, openai-whisper, torchaudio and the CUDA wheels,
# none of which this path touches. torch 2.13.0 is the CPU build on this machine's disk.
WHISPERLIVE_PACKAGES = [
    "faster-whisper==1.2.0", "tokenizers==0.20.3", "websockets", "websocket-client",
    "fastapi", "uvicorn", "python-multipart", "numpy<2.5", "av", "scipy", "onnxruntime",
]
LAUNCH = """
import sys
from whisper_live.server import TranscriptionServer
model, (port, max_clients, max_time) = sys.argv[1], map(int, sys.argv[2:5])
TranscriptionServer().run("127.0.0.1", port=port, backend="faster_whisper",
                          faster_whisper_custom_model_path=model, single_model=True,
                          max_clients=max_clients, max_connection_time=max_time)
"""
FINAL_REACH_S = 1.0  # a clip's last final must end within this of its speech end


# -- the WhisperLive environment ---------------------------------------------------------------

def venv_python() -> Path:
    return VENV / "venv" / "bin" / "python"


def setup() -> None:
    """A venv of its own: WhisperLive wants torch and pins faster-whisper, neither of which
    belongs in sttd's."""
    py = venv_python()
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(py.parent.parent)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + ["torch==2.13.0"], check=True)  # first, so nothing pulls a CUDA one
    subprocess.run(pip + ["--no-deps", "whisper-live==0.10.0"], check=True)
    subprocess.run(pip + WHISPERLIVE_PACKAGES, check=True)
    subprocess.run([str(py), "-c", "import whisper_live.server, whisper_live.backend."
                    "faster_whisper_backend"], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WhisperLive:
    name = "WhisperLive"

    def __init__(self, model: str, max_clients: int, omp: int, log: Path) -> None:
        self.port, self.model, self.max_clients, self.omp, self.log = \
            free_port(), model, max_clients, omp, log
        self.proc: subprocess.Popen | None = None
        if omp != 1:
            self.name = f"WhisperLive omp {omp}"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def __enter__(self) -> WhisperLive:
        home = VENV / "home"  # its caches (~/.cache/whisper-live) stay out of the user's
        home.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HOME": str(home), "HF_HUB_OFFLINE": "1",
               "OMP_NUM_THREADS": str(self.omp)}
        self.proc = subprocess.Popen(
            [str(venv_python()), "-c", LAUNCH, self.model, str(self.port),
             str(self.max_clients), "3600"],
            env=env, stdout=subprocess.DEVNULL, stderr=self.log.open("w"))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            if self.proc.poll() is not None:
                raise SystemExit(f"WhisperLive exited during start-up; see {self.log}")
            time.sleep(0.2)
        raise SystemExit("WhisperLive never listened")

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Sttd:
    name = "sttd"

    def __init__(self, log: Path) -> None:
        from bench.lossless import Server

        self.server = Server(log=log)

    @property
    def url(self) -> str:
        return self.server.ws + f"?sample_rate={RATE}"

    @property
    def proc(self) -> subprocess.Popen | None:
        return self.server.proc

    def __enter__(self) -> Sttd:
        self.server.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.server.__exit__(*exc)


# -- the audio -------------------------------------------------------------------------------

@dataclass
class Clip:
    id: str
    pcm: np.ndarray  # int16
    text: str
    speech: tuple[int, int]  # first speech sample, last speech sample (Silero, no padding)


def load_clips(audio_dir: Path) -> list[Clip]:
    from bench.turns import speech
    from bench.wer import load_manifest, reference
    from client.stream import read_pcm16k

    clips = []
    for row in load_manifest(audio_dir):
        if row.get("language") != "en" or row.get("kind") not in KINDS:
            continue
        pcm = np.frombuffer(read_pcm16k(audio_dir / row["audio"]), "<i2")
        found = speech(pcm)
        if found:
            clips.append(Clip(row["id"], pcm, reference(row), (found[0][0], found[-1][1])))
    return clips


@dataclass
class Placed:
    clip: Clip
    offset: int  # first sample of the clip in the stream
    window_end: int  # first sample of the next clip (or the stream's end)

    @property
    def speech_start(self) -> int:
        return self.offset + self.clip.speech[0]

    @property
    def speech_end(self) -> int:
        return self.offset + self.clip.speech[1]


@dataclass
class Playlist:
    pcm: np.ndarray
    placed: list[Placed]


def playlist(clips: list[Clip], first: int, duration_s: float, gap_ms: int,
             tail_s: float) -> Playlist:
    """Whole clips from ``first`` on, each then ``gap_ms`` of silence, until ``duration_s``
    are played; then ``tail_s`` of silence; padded to whole chunks."""
    gap = np.zeros(gap_ms * RATE // 1000, np.int16)
    parts, placed, at, i = [], [], 0, first
    while at < duration_s * RATE:
        clip = clips[i % len(clips)]
        placed.append(Placed(clip, at, 0))
        parts += [clip.pcm, gap]
        at += clip.pcm.size + gap.size
        i += 1
    parts.append(np.zeros(int(tail_s * RATE), np.int16))
    pcm = np.concatenate(parts)
    pcm = np.concatenate([pcm, np.zeros(-pcm.size % CHUNK, np.int16)])
    for a, b in zip(placed, placed[1:] + [None], strict=True):
        a.window_end = b.offset if b else pcm.size
    return Playlist(pcm, placed)


# -- one stream, both protocols ----------------------------------------------------------------

@dataclass
class Final:
    t: float
    text: str
    start_s: float
    end_s: float


@dataclass
class Partial:
    t: float
    text: str
    end_s: float


@dataclass
class Heard:
    sent: list[float] = field(default_factory=list)  # monotonic send time of each chunk
    finals: list[Final] = field(default_factory=list)
    partials: list[Partial] = field(default_factory=list)
    closing: str = ""  # what a client shows at the end beyond its finals (WhisperLive)
    error: str | None = None


class WhisperLiveTranscript:
    """What WhisperLive's own client keeps of its segment messages (``Client.process_segments``
    and ``write_srt_file``): a completed segment joins the transcript unless it starts before
    the last kept one ends (the server resends the last ``send_last_n_segments`` every time),
    and the last segment, if not completed, is the open one."""

    def __init__(self) -> None:
        self.kept: list[dict] = []
        self.open: dict | None = None

    def update(self, segments: list[dict]) -> tuple[list[dict], dict | None]:
        """The segments newly kept, and the open one this message shows (if any)."""
        new, text, shown = [], [], None
        for i, seg in enumerate(segments):
            if text and text[-1] == seg["text"]:
                continue  # the client's own skip of a repeated text
            text.append(seg["text"].strip())
            if i == len(segments) - 1 and not seg.get("completed", False):
                self.open = shown = seg
            elif seg.get("completed", False) and (
                    not self.kept or float(seg["start"]) >= float(self.kept[-1]["end"])):
                self.kept.append(seg)
                new.append(seg)
        return new, shown

    def closing(self) -> str:
        """The open segment, if the client would append it at the end."""
        if self.open is None or (self.kept and self.kept[-1]["text"] == self.open["text"]):
            return ""
        return self.open["text"]


def whisperlive_options(uid: str) -> dict:
    """``Client.on_open`` with every ``TranscriptionClient`` default."""
    return {"uid": uid, "language": None, "task": "transcribe", "model": "small",
            "use_vad": True, "send_last_n_segments": 10, "no_speech_thresh": 0.45,
            "clip_audio": False, "same_output_threshold": 10, "enable_translation": False,
            "target_language": "fr", "hotwords": None, "enable_diarization": False,
            "max_speakers": 10, "known_speakers": None, "word_timestamps": False,
            "initial_prompt": None, "vad_parameters": None}


async def stream(kind: str, url: str, pl: Playlist, start_at: float) -> Heard:
    """Play ``pl`` to one server in real time from ``start_at`` (monotonic); what came back."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    heard = Heard()
    live = WhisperLiveTranscript()
    ready = asyncio.Event()
    loop = asyncio.get_running_loop()

    def take(raw) -> None:
        t = loop.time()
        m = json.loads(raw)
        if kind == "sttd":
            if m.get("type") == "final" and m.get("text", "").strip():
                heard.finals.append(Final(t, m["text"], m["start_ms"] / 1000, m["end_ms"] / 1000))
            elif m.get("type") == "partial":
                heard.partials.append(Partial(t, m["text"], m["end_ms"] / 1000))
            elif m.get("type") == "error":
                heard.error = f"{m.get('code')}: {m.get('message')}"
            return
        if m.get("message") == "SERVER_READY":
            ready.set()
        elif m.get("status") in ("WAIT", "ERROR"):
            heard.error = f"{m['status']}: {m.get('message')}"
            ready.set()
        elif "segments" in m and m["segments"]:
            new, shown = live.update(m["segments"])
            heard.finals += [Final(t, s["text"], float(s["start"]), float(s["end"])) for s in new]
            if shown is not None:
                heard.partials.append(Partial(t, shown["text"], float(shown["end"])))

    await asyncio.sleep(max(0.0, start_at - loop.time()))
    if kind == "sttd":
        url += f"&call_id={uuid.uuid4()}&frame_ms={CHUNK * 1000 // RATE}"
    async with connect(url, max_size=None, ping_interval=None, open_timeout=30) as ws:
        async def reader() -> None:
            try:
                async for raw in ws:
                    take(raw)
            except ConnectionClosed:
                pass

        task = asyncio.create_task(reader())
        try:
            if kind == "whisperlive":
                await ws.send(json.dumps(whisperlive_options(str(uuid.uuid4()))))
                await asyncio.wait_for(ready.wait(), 60)
                if heard.error:
                    return heard
            t0 = loop.time()
            for n, i in enumerate(range(0, pl.pcm.size, CHUNK)):
                await asyncio.sleep(max(0.0, t0 + n * CHUNK_S - loop.time()))
                chunk = pl.pcm[i:i + CHUNK]
                heard.sent.append(loop.time())
                await ws.send(chunk.tobytes() if kind == "sttd"
                              else (chunk.astype(np.float32) / 32768).tobytes())
            await ws.send('{"type":"eos"}' if kind == "sttd" else b"END_OF_AUDIO")
            await asyncio.wait_for(task, 120)
        except (ConnectionClosed, TimeoutError) as e:
            heard.error = heard.error or f"{type(e).__name__}: {e}"
        finally:
            task.cancel()
    heard.closing = live.closing() if kind == "whisperlive" else ""
    return heard


# -- scoring -----------------------------------------------------------------------------------

def sent_at(heard: Heard, sample: int) -> float:
    """When the client sent the chunk holding ``sample``."""
    return heard.sent[min(len(heard.sent) - 1, max(0, sample // CHUNK))]


def clip_finals(pl: Playlist, heard: Heard) -> list[list[Final]]:
    """The finals each clip owns: those whose midpoint lies in the clip's stretch."""
    owned: list[list[Final]] = [[] for _ in pl.placed]
    starts = [p.offset for p in pl.placed]
    for f in heard.finals:
        mid = (f.start_s + f.end_s) / 2 * RATE
        k = max(0, np.searchsorted(starts, mid, side="right") - 1)
        owned[int(k)].append(f)
    return owned


def score_stream(pl: Playlist, heard: Heard) -> dict:
    finals_ms, unfinished, lags, gaps = [], 0, [], []
    for placed, owned in zip(pl.placed, clip_finals(pl, heard), strict=True):
        end_sent = sent_at(heard, placed.speech_end)
        last = max(owned, key=lambda f: f.t, default=None)
        if last is None or last.end_s * RATE < placed.speech_end - FINAL_REACH_S * RATE:
            unfinished += 1
        else:
            finals_ms.append((last.t - end_sent) * 1000)
        begin = sent_at(heard, placed.speech_start)
        times = sorted(m.t for m in [*heard.partials, *heard.finals] if begin <= m.t <= end_sent)
        edges = [begin, *times, end_sent]
        gaps += [(b - a) * 1000 for a, b in pairwise(edges)]
    shown = None
    for p in heard.partials:  # a repeat of the text on screen tells the caller nothing new
        if p.text != shown:
            lags.append((p.t - sent_at(heard, int(p.end_s * RATE))) * 1000)
        shown = p.text
    hypothesis = " ".join(t for t in [*(f.text.strip() for f in heard.finals),
                                      heard.closing.strip()] if t)
    reference = " ".join(p.clip.text for p in pl.placed)
    return {"final_ms": finals_ms, "unfinished": unfinished, "clips": len(pl.placed),
            "partial_lag_ms": lags, "gap_ms": gaps, "hypothesis": hypothesis,
            "reference": reference, "error": heard.error}


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 1)


def wer(pairs: list[tuple[str, str]]) -> float | None:
    import jiwer
    from whisper_normalizer.english import EnglishTextNormalizer

    norm = EnglishTextNormalizer()
    pairs = [(norm(r), norm(h)) for r, h in pairs if norm(r).strip()]
    if not pairs:
        return None
    out = jiwer.process_words([r for r, _ in pairs], [h for _, h in pairs])
    return round(100 * out.wer, 2)


def summarise(scores: list[dict], cpu: float, slo_final: float, slo_lag: float) -> dict:
    finals = [v for s in scores for v in s["final_ms"]]
    lags = [v for s in scores for v in s["partial_lag_ms"]]
    gaps = [v for s in scores for v in s["gap_ms"]]
    out = {
        "clips": sum(s["clips"] for s in scores),
        "unfinished": sum(s["unfinished"] for s in scores),
        "errors": [s["error"] for s in scores if s["error"]],
        "final_p50_ms": pct(finals, 0.5), "final_p95_ms": pct(finals, 0.95),
        "partials": len(lags),
        "partial_lag_p50_ms": pct(lags, 0.5), "partial_lag_p95_ms": pct(lags, 0.95),
        "gap_p95_ms": pct(gaps, 0.95),
        "wer": wer([(s["reference"], s["hypothesis"]) for s in scores]),
        "server_cpu_pct": round(cpu, 1),
    }
    out["within_slo"] = bool(
        finals and not out["errors"] and out["final_p95_ms"] <= slo_final
        and (not lags or out["partial_lag_p95_ms"] <= slo_lag)
        and out["unfinished"] <= 0.05 * out["clips"])
    return out


# -- a run ---------------------------------------------------------------------------------------

def cpu_seconds(proc: subprocess.Popen | None) -> float:
    import psutil

    if proc is None:
        return 0.0
    try:
        p = psutil.Process(proc.pid)
        total = sum(p.cpu_times()[:2])
        for c in p.children(recursive=True):
            total += sum(c.cpu_times()[:2])
        return total
    except psutil.Error:
        return 0.0


async def rung(server, kind: str, n: int, lists: list[Playlist]) -> tuple[list[dict], float]:
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.5
    c0, w0 = cpu_seconds(server.proc), time.monotonic()
    heard = await asyncio.gather(*(stream(kind, server.url, lists[i], start + i * CHUNK_S / n)
                                   for i in range(n)))
    cpu = (cpu_seconds(server.proc) - c0) / (time.monotonic() - w0) * 100
    return [score_stream(pl, h) for pl, h in zip(lists, heard, strict=True)], cpu


def table(rows: list[dict]) -> str:
    head = ("| streams | server | final p50 / p95 (ms) | unfinished | partial lag p50 / p95 (ms) "
            "| gap p95 (ms) | partials | WER % | server CPU | within SLO |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r['streams']} | {r['server']} | {r['final_p50_ms']} / {r['final_p95_ms']} "
            f"| {r['unfinished']} of {r['clips']} | {r['partial_lag_p50_ms']} / "
            f"{r['partial_lag_p95_ms']} | {r['gap_p95_ms']} | {r['partials']} | {r['wer']} "
            f"| {r['server_cpu_pct']} % | {'yes' if r['within_slo'] else 'no'} |")
    return "\n".join(lines)


def ratios(rows: list[dict], peer: str) -> str:
    """sttd's figures over the peer's, per rung (below 1 = sttd lower)."""
    def ratio(a, b):
        return f"{a / b:.2f}" if a is not None and b else "–"

    lines = [f"| streams | final p95 sttd / {peer} | partial lag p95 | gap p95 | WER (points) "
             "| server CPU |", "|---|---|---|---|---|---|"]
    by = {(r["streams"], r["server"]): r for r in rows}
    for n in sorted({r["streams"] for r in rows}):
        s, w = by.get((n, "sttd")), by.get((n, peer))
        if not (s and w):
            continue
        dw = f"{s['wer'] - w['wer']:+.2f}" if s["wer"] is not None and w["wer"] is not None \
            else "–"
        lines.append(f"| {n} | {ratio(s['final_p95_ms'], w['final_p95_ms'])} | "
                     f"{ratio(s['partial_lag_p95_ms'], w['partial_lag_p95_ms'])} | "
                     f"{ratio(s['gap_p95_ms'], w['gap_p95_ms'])} | {dw} | "
                     f"{ratio(s['server_cpu_pct'], w['server_cpu_pct'])} |")
    return "\n".join(lines)


def capacity(rows: list[dict], server: str) -> int:
    """The largest rung within the SLO, with every smaller rung within it too."""
    held = 0
    for r in sorted((r for r in rows if r["server"] == server), key=lambda r: r["streams"]):
        if not r["within_slo"]:
            break
        held = r["streams"]
    return held


async def run(args: argparse.Namespace) -> dict:
    from backends.whisper import bundled_model
    from bench.calibrate import calibrate, describe

    ladder = [int(x) for x in args.concurrency.split(",")]
    clips = load_clips(args.audio_dir)
    rng = random.Random(args.seed)
    firsts = [rng.randrange(len(clips)) for _ in range(max(ladder))]
    lists = [playlist(clips, f, args.duration, args.gap_ms, args.tail_s) for f in firsts]
    shortest = min(range(len(clips)), key=lambda i: clips[i].pcm.size)
    warm = [playlist(clips, shortest, 1, args.gap_ms, 2)]
    print(f"{len(clips)} English clips; {args.duration:g} s per stream; calibrating …",
          file=sys.stderr)
    cal = calibrate()
    print(describe(cal), file=sys.stderr)
    logs = args.out.parent
    logs.mkdir(parents=True, exist_ok=True)
    servers = [("sttd", Sttd(logs / "whisperlive-sttd.log"))]
    for omp in args.whisperlive_omp:
        servers.append(("whisperlive", WhisperLive(bundled_model(), max(ladder), omp,
                                                   logs / f"whisperlive-omp{omp}.log")))
    rows = []
    for _, s in servers:
        s.__enter__()
    try:
        for kind, s in servers:  # warm-up: model load (WhisperLive loads it on first client)
            await rung(s, kind, 1, warm)
        for i, n in enumerate(ladder):
            order = servers if i % 2 == 0 else servers[::-1]
            for kind, s in order:
                scores, cpu = await rung(s, kind, n, lists[:n])
                row = {"streams": n, "server": s.name,
                       **summarise(scores, cpu, args.slo_final_ms, args.slo_partial_lag_ms)}
                rows.append(row)
                print(table([row]).splitlines()[-1], file=sys.stderr)
    finally:
        for _, s in servers:
            s.__exit__(None, None, None)
    cal_end = calibrate()
    report = {
        "tool": "bench.whisperlive",
        "command": "python -m bench.whisperlive " + " ".join(sys.argv[1:]),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "calibration": cal, "calibration_end": cal_end,
        "whisperlive": "whisper-live 0.10.0 (PyPI), faster_whisper backend, single model, "
                       f"OMP_NUM_THREADS {args.whisperlive_omp}, max_clients {max(ladder)}",
        "slo": {"final_p95_ms": args.slo_final_ms, "partial_lag_p95_ms": args.slo_partial_lag_ms},
        "rows": rows,
        "capacity": {s.name: capacity(rows, s.name) for _, s in servers},
        "clips": len(clips),
    }
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.whisperlive", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setup", action="store_true",
                   help=f"build WhisperLive's venv in {VENV.relative_to(REPO_ROOT)} and stop")
    p.add_argument("--concurrency", default="1,2,4,8")
    p.add_argument("--duration", type=float, default=60.0,
                   help="seconds of clips per stream (whole clips, so a little more)")
    p.add_argument("--gap-ms", type=int, default=1000, help="silence after every clip")
    p.add_argument("--tail-s", type=float, default=6.0, help="silence before the end")
    p.add_argument("--whisperlive-omp", type=lambda s: [int(x) for x in s.split(",")],
                   default=[1], help="OMP_NUM_THREADS for WhisperLive (run_server's default "
                   "is 1); several = one WhisperLive per value")
    p.add_argument("--slo-final-ms", type=float, default=800.0)
    p.add_argument("--slo-partial-lag-ms", type=float, default=1000.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--audio-dir", type=Path, default=EVAL)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" /
                   "whisperlive.json")
    args = p.parse_args(argv)
    if args.setup or not venv_python().exists():
        setup()
        if args.setup:
            return 0
    report = asyncio.run(run(args))
    peers = [n for n in report["capacity"] if n != "sttd"]
    text = table(report["rows"]) + "\n\n" + "\n\n".join(ratios(report["rows"], p) for p in peers)
    print(text)
    print("capacity within SLO:", report["capacity"])
    from bench.plots import write_report

    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
