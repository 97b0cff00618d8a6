"""Load test for the native streaming endpoint (``/v1/stt/ws``).

Many simulated callers stream real speech at real-time pace, concurrency is ramped in rungs,
and every rung reports client-side latencies, server-side latencies, drops, errors and the
server's CPU and memory. The ramp stops at the first rung that breaks the SLO.

    python -m bench.load --concurrency 64,128,256,512 --duration 30
    python -m bench.load --concurrency 256 --frame-ms 20 --procs 2
    python -m bench.load --idle-sessions 1000

A rung: connect every client (handshakes staggered over ``--stagger`` s), wait until all
have tried (a barrier across ``--procs`` processes), then each client streams ``--duration`` s
of audio paced by an absolute schedule (start + n × frame, starts staggered again), sends
``{"type":"eos"}`` and waits for the remaining finals and the close. Rates, CPU and RSS are
measured over the window in which every client streams. Each client plays the selected clips
back to back (each followed by ``--gap-ms`` of silence), starting at a seeded random clip.

Latency definitions (all wall-clock times are ``time.monotonic()`` of the load generator,
taken when its event loop handles the event, so they include any load-generator lag):

* final latency (client): for each final with ``reason == "endpoint"``: receive time − the
  time the client sent the frame holding the last audio sample the endpointer needed, i.e.
  the sample just before ``end_ms + vad_silence_ms`` (silence rounded up to the server's
  20 ms VAD frame), clamped to the last frame sent. With 100 ms frames that frame also
  carries up to 80 ms of later audio; the server cannot have finalized before it arrived.
* server latency: the final's ``latency_ms`` (server receipt of the batch holding the
  endpoint frame → final produced; excludes the output queue, network and client).
* partial lag: each partial's receive time − send time of the frame holding the audio sample
  just before its ``end_ms`` (the endpointer position when the partial was computed).
* first-partial latency: per segment, first partial's receive time − send time of the frame
  where the server detected speech. Detection happens after a voiced run of
  ``speech_start_ms`` (60) and the segment's ``start_ms`` includes ``preroll_ms`` (300) of
  audio before the run, so detection = ``start_ms + preroll + run``. That is exact only when
  the pre-roll ring was full, which is provable when ``start_ms`` lies after the previous
  endpoint position (``end_ms + vad_silence``, or 0 at session start); other segments are
  counted as ``first_partial_unknown`` and left out. It includes the partial cadence
  (``partial_ms`` of segment audio, pre-roll included) and the backend's text timing (the
  mock only emits a partial once a word's centre has been heard).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import bisect
import contextlib
import json
import math
import os
import platform
import random
import resource
import statistics
import sys
import time
import urllib.request
import wave
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import psutil
import websockets
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

REPO_ROOT = Path(__file__).resolve().parents[1]
RATE = 16000
SAMPLES_PER_MS = RATE // 1000
VAD_FRAME_MS = 20  # the server's VAD/endpointer frame
DEFAULT_KINDS = "read,endpointing,conversational,long-form,command,numbers"
EOS = '{"type":"eos"}'

now = time.monotonic  # CLOCK_MONOTONIC: comparable across processes on one host


# --------------------------------------------------------------------------------------------
# Audio: every selected clip, padded with silence, sliced once into shared frames.


@dataclass
class Playlist:
    frames: list[bytes]  # one cyclic stream of frames, shared by every client
    clip_starts: list[int]  # frame index where each clip begins
    clip_ids: list[str]
    frame_ms: int
    audio_s: float

    @property
    def frame_bytes(self) -> int:
        return self.frame_ms * SAMPLES_PER_MS * 2


def load_playlist(audio_dir: Path, kinds: set[str] | None, languages: set[str] | None,
                  ids: set[str] | None, frame_ms: int, gap_ms: int) -> Playlist:
    manifest = audio_dir / "manifest.jsonl"
    if not manifest.is_file():
        raise SystemExit(f"no manifest at {manifest}")
    frame_bytes = frame_ms * SAMPLES_PER_MS * 2
    gap = b"\x00\x00" * (gap_ms * SAMPLES_PER_MS)
    frames: list[bytes] = []
    starts: list[int] = []
    clip_ids: list[str] = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        d = json.loads(line)
        if ids is not None:
            if d["id"] not in ids:
                continue
        elif (kinds and d.get("kind") not in kinds) or (
                languages and d.get("language") not in languages):
            continue
        with wave.open(str(audio_dir / d["audio"]), "rb") as w:
            if (w.getsampwidth(), w.getnchannels(), w.getframerate()) != (2, 1, RATE):
                print(f"skipping {d['id']}: not 16 kHz mono s16", file=sys.stderr)
                continue
            pcm = w.readframes(w.getnframes())
        data = pcm + gap
        data += b"\x00" * (-len(data) % frame_bytes)  # clips start on a frame boundary
        starts.append(len(frames))
        clip_ids.append(d["id"])
        frames.extend(data[i:i + frame_bytes] for i in range(0, len(data), frame_bytes))
    if not frames:
        raise SystemExit("no clips selected (check --audio-dir, --kinds, --languages, --ids)")
    return Playlist(frames, starts, clip_ids, frame_ms, len(frames) * frame_ms / 1000)


# --------------------------------------------------------------------------------------------
# Clients.


@dataclass
class RungSpec:
    """What one load-generator process runs for a rung (picklable)."""

    rung: int
    n_total: int
    clients: list[tuple[int, int]]  # (global client index, first frame)
    t_start: float  # monotonic; connections are staggered from here
    stagger_s: float


@dataclass
class Go:
    """Sent once every client of the rung has tried to connect: when streaming starts."""

    t_stream: float  # monotonic; client i starts at t_stream + stagger * i / n
    window: tuple[float, float]  # full-concurrency window, monotonic


@dataclass
class Raw:
    """Raw per-rung measurements of one process; merged across processes."""

    final_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    partial_lag_ms: list[float] = field(default_factory=list)
    first_partial_ms: list[float] = field(default_factory=list)
    partial_gap_ms: list[float] = field(default_factory=list)
    connect_ms: list[float] = field(default_factory=list)
    send_lag_ms: array.array = field(default_factory=lambda: array.array("f"))  # actual −
    # scheduled send time, one per frame
    loop_lag_ms: list[float] = field(default_factory=list)
    c: Counter = field(default_factory=Counter)  # counters
    outcomes: Counter = field(default_factory=Counter)

    def merge(self, other: Raw) -> None:
        for name in ("final_ms", "server_ms", "partial_lag_ms", "first_partial_ms",
                     "partial_gap_ms", "connect_ms", "send_lag_ms", "loop_lag_ms"):
            getattr(self, name).extend(getattr(other, name))
        self.c.update(other.c)
        self.outcomes.update(other.outcomes)


@dataclass(frozen=True)
class ClientConfig:
    url: str
    frame_ms: int
    speed: float
    duration: float
    vad_silence_ms: int
    ring_ms: int  # preroll + speech-start run, as the server's endpointer keeps them
    open_timeout: float
    drain_timeout: float
    query: str  # extra query string, already encoded, starting with '&' or empty
    prebuilt: bool = True  # write pre-masked WebSocket frames straight to the socket
    urls: tuple[str, ...] = ()  # several servers: client i connects to urls[i % len(urls)]
    # (default: url alone)


def ws_binary_frame(payload: bytes, mask: bytes) -> bytes:
    """A complete client→server binary frame (FIN, opcode 2, masked), built once per audio
    frame so the load generator spends its CPU on pacing, not on framing and masking."""
    n = len(payload)
    if n < 126:
        header = bytes([0x82, 0x80 | n])
    elif n < 65536:
        header = bytes([0x82, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([0x82, 0x80 | 127]) + n.to_bytes(8, "big")
    key = np.frombuffer((mask * (n // 4 + 1))[:n], dtype=np.uint8)
    body = np.frombuffer(payload, dtype=np.uint8) ^ key
    return header + mask + body.tobytes()


def _ceil_to(ms: int, step: int) -> int:
    return -(-ms // step) * step


class Driver:
    """Runs a rung's clients in this process's event loop."""

    def __init__(self, cfg: ClientConfig, playlist: Playlist) -> None:
        self.cfg = cfg
        self.frames = playlist.frames
        mask = os.urandom(4)
        self.wire = [ws_binary_frame(f, mask) for f in self.frames] if cfg.prebuilt else None
        self.frame_samples = cfg.frame_ms * SAMPLES_PER_MS
        self.period = cfg.frame_ms / 1000 / cfg.speed if cfg.speed > 0 else 0.0
        self.sil_ms = _ceil_to(cfg.vad_silence_ms, VAD_FRAME_MS)
        self.bases = [f"{u}{'&' if '?' in u else '?'}sample_rate={RATE}"
                      f"&frame_ms={cfg.frame_ms}{cfg.query}" for u in (cfg.urls or (cfg.url,))]
        self.base = self.bases[0]

    async def run(self, spec: RungSpec, barrier: Callable[[int, int], Awaitable[Go]]) -> Raw:
        """Connect every client (staggered), pass the barrier, then stream.

        ``barrier(connected, failed)`` returns when every load-generator process is connected.
        """
        raw = Raw()
        self.raw = raw
        lagger = asyncio.create_task(_loop_lag(raw.loop_lag_ms))
        try:
            conns = await asyncio.gather(*(self._connect(spec, i) for i, _ in spec.clients))
            ok = sum(ws is not None for ws in conns)
            go = await barrier(ok, len(conns) - ok)
            await asyncio.gather(*(
                self._stream(spec, go, i, first, ws)
                for (i, first), ws in zip(spec.clients, conns, strict=True) if ws is not None))
        finally:
            lagger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lagger
        return raw

    async def _connect(self, spec: RungSpec, i: int):
        raw = self.raw
        delay = spec.t_start + spec.stagger_s * i / max(1, spec.n_total) - now()
        if delay > 0:
            await asyncio.sleep(delay)
        url = f"{self.bases[i % len(self.bases)]}&call_id=load-r{spec.rung}-c{i}"
        t_conn = now()
        try:
            ws = await connect(url, max_queue=None, compression=None, ping_interval=None,
                               max_size=None, open_timeout=self.cfg.open_timeout,
                               close_timeout=5)
        except InvalidStatus as exc:
            status = exc.response.status_code
            raw.outcomes["refused_503" if status == 503 else f"http_{status}"] += 1
            return None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raw.outcomes[f"connect_{type(exc).__name__}"] += 1
            return None
        raw.connect_ms.append((now() - t_conn) * 1000)
        raw.c["sessions"] += 1
        return ws

    async def _stream(self, spec: RungSpec, go: Go, i: int, first_frame: int, ws) -> None:
        raw = self.raw
        c = raw.c
        sent = array.array("d")  # send time of frame n of this session
        state: dict[str, Any] = {}
        receiver = asyncio.create_task(self._receive(ws, sent, state))
        t0 = go.t_stream + spec.stagger_s * i / max(1, spec.n_total)
        delay = t0 - now()
        if delay > 0:
            await asyncio.sleep(delay)
        frames = self.frames
        nframes = len(frames)
        k = first_frame
        period = self.period
        append = sent.append
        if self.wire is not None:
            frames, write = self.wire, ws.transport.write

            async def send(frame: bytes) -> None:
                write(frame)
        else:
            send = ws.send
        sleep = asyncio.sleep
        end = t0 + self.cfg.duration
        n = 0
        try:
            while True:
                if period:  # absolute schedule: no drift however late a send returns
                    target = t0 + n * period
                    if target >= end:
                        break
                    d = target - now()
                    if d > 0:
                        await sleep(d)
                elif now() >= end:
                    break
                append(now())
                await send(frames[k])
                k = k + 1 if k + 1 < nframes else 0
                n += 1
                if not period:
                    await sleep(0)
            await ws.send(EOS)
        except ConnectionClosed:
            c["send_interrupted"] += 1
        c["frames"] += n
        w0, w1 = go.window
        c["frames_in_window"] += bisect.bisect_left(sent, w1) - bisect.bisect_left(sent, w0)
        if period:
            lag = raw.send_lag_ms
            for j, t in enumerate(sent):
                lag.append((t - t0 - j * period) * 1000)
        try:
            await asyncio.wait_for(asyncio.shield(receiver), self.cfg.drain_timeout)
        except TimeoutError:
            state.setdefault("outcome", "drain_timeout")
        except Exception:  # noqa: BLE001 - the receiver records its own failure
            pass
        finally:
            receiver.cancel()
            with contextlib.suppress(BaseException):
                await receiver
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 5)
        raw.outcomes[state.get("outcome", "ok")] += 1

    async def _receive(self, ws, sent: array.array, state: dict[str, Any]) -> None:
        raw = self.raw
        c = raw.c
        final_ms = raw.final_ms
        server_ms = raw.server_ms
        plag = raw.partial_lag_ms
        fs = self.frame_samples
        sil = self.sil_ms
        ring = self.cfg.ring_ms
        loads = json.loads
        clock = now
        prev_end = 0  # endpointer position where the pre-roll ring restarted filling
        anchors: dict[int, int | None] = {}  # segment_seq → detection ms (None: unknown)
        # segment_seq → when the segment was detected or its last partial came, and whether
        # one has come: the gaps between are the partial cadence a caller sees.
        shown: dict[int, tuple[float, bool]] = {}
        gaps = raw.partial_gap_ms
        try:
            async for msg in ws:
                t = clock()
                m = loads(msg)
                typ = m["type"]
                if typ == "partial":
                    c["partials"] += 1
                    last = len(sent) - 1
                    if last < 0:
                        continue
                    idx = (m["end_ms"] * SAMPLES_PER_MS - 1) // fs
                    if idx > last:
                        idx = last
                    plag.append((t - sent[idx]) * 1000)
                    seg = m["segment_seq"]
                    if seg in shown:
                        gaps.append((t - shown[seg][0]) * 1000)
                    shown[seg] = (t, True)
                    if seg in anchors:
                        anchor = anchors.pop(seg)
                        if anchor is not None:
                            idx = min((anchor * SAMPLES_PER_MS - 1) // fs, last)
                            raw.first_partial_ms.append((t - sent[idx]) * 1000)
                        else:
                            c["first_partial_unknown"] += 1
                elif typ == "final":
                    c["finals"] += 1
                    reason = m.get("reason")
                    end_ms = m["end_ms"]
                    anchors.pop(m["segment_seq"], None)
                    began = shown.pop(m["segment_seq"], None)
                    if began is not None and not began[1]:  # no partial: the final was first
                        gaps.append((t - began[0]) * 1000)
                    if not m.get("text"):
                        c["finals_empty"] += 1
                    if reason == "endpoint":
                        c["finals_endpoint"] += 1
                        last = len(sent) - 1
                        idx = ((end_ms + sil) * SAMPLES_PER_MS - 1) // fs
                        if idx > last:
                            idx = last
                            c["finals_clamped"] += 1
                        if idx >= 0:
                            final_ms.append((t - sent[idx]) * 1000)
                        server_ms.append(m.get("latency_ms", 0))
                        prev_end = end_ms + sil
                    else:
                        c[f"finals_{reason}"] += 1
                        prev_end = end_ms
                elif typ == "speech_started":
                    c["speech_started"] += 1
                    start = m["start_ms"]
                    anchors[m["segment_seq"]] = start + ring if start > prev_end else None
                    shown[m["segment_seq"]] = (t, False)
                elif typ == "warning":
                    c["warnings"] += 1
                    c["dropped_ms"] += m.get("dropped_ms", 0)
                elif typ == "error":
                    c["error_msgs"] += 1
                    state["outcome"] = f"error_{m.get('code')}"
                elif typ == "ready":
                    c["ready"] += 1
        except ConnectionClosed:
            pass
        code = ws.close_code
        if "outcome" not in state and code != 1000:
            state["outcome"] = f"close_{code}"


async def _loop_lag(out: list[float], interval: float = 0.1) -> None:
    """Event-loop responsiveness of the load generator (oversleep of a 100 ms timer)."""
    while True:
        t = now()
        await asyncio.sleep(interval)
        out.append((now() - t - interval) * 1000)


# --------------------------------------------------------------------------------------------
# Load-generator worker processes (--procs > 1).


def _worker_main(conn, cfg: ClientConfig, playlist: Playlist) -> None:
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    driver = Driver(cfg, playlist)
    try:
        while True:
            spec = conn.recv()
            if spec is None:
                break

            async def barrier(ok: int, failed: int) -> Go:
                conn.send(("connected", ok, failed))
                return await asyncio.to_thread(conn.recv)

            conn.send(("done", loop.run_until_complete(driver.run(spec, barrier))))
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        loop.close()


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


# --------------------------------------------------------------------------------------------
# Server monitoring.


class ProcGroup:
    """CPU time and RSS of a fixed set of processes."""

    def __init__(self, procs: list[psutil.Process]) -> None:
        self.procs = procs

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def sample(self) -> tuple[float, float, float]:
        """(monotonic time, total cpu seconds, total RSS bytes)."""
        cpu = rss = 0.0
        for p in self.procs:
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    cpu += t.user + t.system
                    rss += p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return now(), cpu, rss


def find_server(url: str, pids: list[int] | None, exclude: set[int]) -> ProcGroup | None:
    roots: set[int] = set(pids or [])
    if not roots:
        parts = urlsplit(url.replace("ws://", "http://").replace("wss://", "https://"))
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            for conn in psutil.net_connections(kind="tcp"):
                if (conn.status == psutil.CONN_LISTEN and conn.laddr
                        and conn.laddr.port == port and conn.pid):
                    roots.add(conn.pid)
        except psutil.AccessDenied:
            print("warning: cannot list sockets (need root); use --server-pid", file=sys.stderr)
        # A shared listening socket is reported under one pid only (e.g. one uvicorn worker):
        # climb to ancestors that hold the same socket (the --workers supervisor).
        for pid in list(roots):
            with contextlib.suppress(psutil.Error):
                parent = psutil.Process(pid).parent()
                while parent is not None and _listens(parent, port):
                    roots.add(parent.pid)
                    parent = parent.parent()
    procs: dict[int, psutil.Process] = {}
    for pid in roots:
        try:
            p = psutil.Process(pid)
            for q in [p, *p.children(recursive=True)]:
                procs[q.pid] = q
        except psutil.NoSuchProcess:
            continue
    for pid in exclude:
        procs.pop(pid, None)
    if not procs:
        return None
    return ProcGroup(list(procs.values()))


def _listens(p: psutil.Process, port: int) -> bool:
    try:
        conns = p.net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
               for c in conns)


class Sampler:
    """Samples a ProcGroup periodically in the background."""

    def __init__(self, group: ProcGroup | None, interval: float) -> None:
        self.group = group
        self.interval = interval
        self.samples: list[tuple[float, float, float]] = []
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self.group is not None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self.samples.append(self.group.sample())

    async def _run(self) -> None:
        while True:
            self.samples.append(self.group.sample())
            await asyncio.sleep(self.interval)

    def window(self, w0: float, w1: float) -> dict[str, float] | None:
        inside = [s for s in self.samples if w0 <= s[0] <= w1]
        if len(inside) < 2:
            return None
        (ta, ca, _), (tb, cb, _) = inside[0], inside[-1]
        rss = [s[2] for s in inside]
        return {
            "cpu_pct": round((cb - ca) / (tb - ta) * 100, 1) if tb > ta else None,
            "rss_max_mb": round(max(rss) / 2**20, 1),
            "rss_mean_mb": round(statistics.fmean(rss) / 2**20, 1),
            "rss_end_mb": round(rss[-1] / 2**20, 1),
        }


def median_rss(group: ProcGroup | None, n: int = 3, gap: float = 0.1) -> float | None:
    if group is None:
        return None
    vals = []
    for i in range(n):
        vals.append(group.sample()[2])
        if i < n - 1:
            time.sleep(gap)
    return statistics.median(vals)


def http_get_json(url: str, path: str) -> Any:
    parts = urlsplit(url)
    scheme = "https" if parts.scheme == "wss" else "http"
    try:
        with urllib.request.urlopen(f"{scheme}://{parts.netloc}{path}", timeout=3) as r:
            return json.loads(r.read())
    except Exception as exc:  # noqa: BLE001 - informational only
        if hasattr(exc, "read"):
            with contextlib.suppress(Exception):
                return json.loads(exc.read())
        return {"unreachable": str(exc)}


# --------------------------------------------------------------------------------------------
# Statistics and report.


def dist(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    s = sorted(values)

    def q(x: float) -> float:
        pos = (len(s) - 1) * x
        lo = math.floor(pos)
        hi = min(lo + 1, len(s) - 1)
        return round(s[lo] + (s[hi] - s[lo]) * (pos - lo), 2)

    return {"n": len(s), "p50": q(0.5), "p95": q(0.95), "p99": q(0.99),
            "max": round(s[-1], 2), "mean": round(statistics.fmean(s), 2)}


def _fmt(v: Any, digits: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


COLUMNS = [
    ("clients", 7), ("fps", 6), ("rt", 5), ("fin50", 6), ("fin95", 6), ("fin99", 6),
    ("srv50", 5), ("srv95", 5), ("plag50", 6), ("plag95", 6), ("gap95", 6), ("1stP50", 6),
    ("finals", 6), ("parts", 6), ("warn", 4), ("dropms", 6), ("err", 4), ("refus", 5),
    ("sCPU%", 6), ("sRSS", 6), ("MB/ses", 6), ("lgCPU%", 6), ("lag99", 5), ("SLO", 4),
]


def table_header() -> str:
    return " ".join(f"{name:>{w}}" for name, w in COLUMNS)


def table_row(r: dict[str, Any]) -> str:
    fin, srv, pl, fp = r["final_ms"], r["server_latency_ms"], r["partial_lag_ms"], \
        r["first_partial_ms"]
    srvp = r.get("server") or {}
    cells = [
        r["clients"], _fmt(r["frames_per_s"]), _fmt(r["realtime_factor"], 2),
        _fmt(fin.get("p50"), 1), _fmt(fin.get("p95"), 1), _fmt(fin.get("p99"), 1),
        _fmt(srv.get("p50")), _fmt(srv.get("p95")), _fmt(pl.get("p50"), 1),
        _fmt(pl.get("p95"), 1), _fmt(r.get("partial_gap_ms", {}).get("p95")),
        _fmt(fp.get("p50")), r["counts"]["finals"],
        r["counts"]["partials"], r["counts"]["warnings"], r["counts"]["dropped_ms"],
        r["errors"], r["refused"], _fmt(srvp.get("cpu_pct")), _fmt(srvp.get("rss_max_mb")),
        _fmt(r.get("rss_per_session_mb"), 2), _fmt(r["loadgen"].get("cpu_pct")),
        _fmt(r["loadgen"]["loop_lag_ms"].get("p99"), 0),
        "ok" if r["slo_ok"] else "FAIL",
    ]
    return " ".join(f"{str(v):>{w}}" for v, (_, w) in zip(cells, COLUMNS, strict=True))


def summarize(raw: Raw, n: int, args: argparse.Namespace, window: tuple[float, float],
              server: dict[str, float] | None, rss_idle: float | None,
              loadgen_cpu: float | None, wall_s: float) -> dict[str, Any]:
    c = raw.c
    w = window[1] - window[0]
    refused = sum(v for k, v in raw.outcomes.items() if k == "refused_503")
    errors = sum(v for k, v in raw.outcomes.items() if k not in ("ok", "refused_503"))
    fin = dist(raw.final_ms)
    expected_fps = n * 1000 / args.frame_ms * (args.speed or 0)
    fps = c["frames_in_window"] / w if w > 0 else None
    reasons = []
    if fin.get("n") and fin["p95"] > args.slo_final_ms:
        reasons.append(f"p95 final {fin['p95']:.0f} ms > {args.slo_final_ms:g} ms")
    lag, gap = dist(raw.partial_lag_ms), dist(raw.partial_gap_ms)
    lag_slo = getattr(args, "slo_partial_lag_ms", 0)  # callers may build their own args
    gap_slo = getattr(args, "slo_partial_gap_ms", 0)
    if lag_slo and lag.get("n") and lag["p95"] > lag_slo:
        reasons.append(f"p95 partial lag {lag['p95']:.0f} ms > {lag_slo:g} ms")
    if gap_slo and gap.get("n") and gap["p95"] > gap_slo:
        reasons.append(f"p95 partial gap {gap['p95']:.0f} ms > {gap_slo:g} ms")
    if c["warnings"]:
        reasons.append(f"{c['warnings']} drop warnings ({c['dropped_ms']} ms)")
    if errors:
        reasons.append(f"{errors} failed sessions")
    if refused:
        reasons.append(f"{refused} refused")
    rss_per = None
    if server and rss_idle is not None and n:
        rss_per = round((server["rss_max_mb"] - rss_idle / 2**20) / n, 3)
    counts_keys = ["sessions", "ready", "frames", "frames_in_window", "speech_started",
                   "partials", "finals", "finals_endpoint", "finals_eos", "finals_max_segment",
                   "finals_commit", "finals_empty", "finals_clamped", "first_partial_unknown",
                   "warnings", "dropped_ms", "error_msgs", "send_interrupted"]
    return {
        "clients": n,
        "window_s": round(w, 2),
        "wall_s": round(wall_s, 2),
        "frames_per_s": round(fps, 1) if fps is not None else None,
        "expected_frames_per_s": round(expected_fps, 1) if expected_fps else None,
        "realtime_factor": (round(fps / (n * 1000 / args.frame_ms), 3)
                            if fps is not None and n else None),
        "final_ms": fin,
        "server_latency_ms": dist(raw.server_ms),
        "partial_lag_ms": lag,
        "partial_gap_ms": gap,
        "first_partial_ms": dist(raw.first_partial_ms),
        "connect_ms": dist(raw.connect_ms),
        "counts": {k: c.get(k, 0) for k in counts_keys},
        "outcomes": dict(raw.outcomes),
        "errors": errors,
        "refused": refused,
        "server": server,
        "server_rss_idle_mb": round(rss_idle / 2**20, 1) if rss_idle is not None else None,
        "rss_per_session_mb": rss_per,
        "loadgen": {
            "cpu_pct": round(loadgen_cpu, 1) if loadgen_cpu is not None else None,
            "send_lag_ms": dist(raw.send_lag_ms),
            "loop_lag_ms": dist(raw.loop_lag_ms),
        },
        "slo_ok": not reasons,
        "slo_failures": reasons,
    }


# --------------------------------------------------------------------------------------------
# Orchestration.


class Runner:
    def __init__(self, args: argparse.Namespace, cfg: ClientConfig, playlist: Playlist) -> None:
        self.args = args
        self.cfg = cfg
        self.playlist = playlist
        self.rng = random.Random(args.seed)
        self.workers: list[tuple[Any, Any]] = []  # (process, connection)
        self.driver = Driver(cfg, playlist)

    def start_workers(self) -> None:
        import multiprocessing as mp
        ctx = mp.get_context("fork")  # children inherit the sliced audio
        for _ in range(self.args.procs):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker_main, args=(child, self.cfg, self.playlist),
                            daemon=True)
            p.start()
            child.close()
            self.workers.append((p, parent))

    def stop_workers(self) -> None:
        for _, conn in self.workers:
            with contextlib.suppress(Exception):
                conn.send(None)
        for p, _ in self.workers:
            p.join(5)
            if p.is_alive():
                p.terminate()

    def loadgen_group(self) -> ProcGroup:
        procs = [psutil.Process()]
        procs += [psutil.Process(p.pid) for p, _ in self.workers]
        return ProcGroup(procs)

    async def rung(self, idx: int, n: int, server: ProcGroup | None,
                   others: dict[str, ProcGroup] | None = None) -> dict[str, Any]:
        """One rung of ``n`` clients. ``others``: more processes (e.g. a load balancer) whose
        CPU and RSS over the same window go in the result's ``others[name]``."""
        args = self.args
        rss_idle = await asyncio.to_thread(median_rss, server)
        pl = self.playlist
        clients = [(i, pl.clip_starts[self.rng.randrange(len(pl.clip_starts))])
                   for i in range(n)]
        stagger = min(args.stagger, args.duration / 2)
        t_start = now() + 0.2
        srv = Sampler(server, args.sample_interval)
        lg = Sampler(self.loadgen_group(), args.sample_interval)
        extra = {name: Sampler(g, args.sample_interval) for name, g in (others or {}).items()}
        info: dict[str, Any] = {}

        async def release(connected: int) -> Go:
            """Everyone has tried to connect: note the memory, then start streaming."""
            info["connect_phase_s"] = round(now() - t_start, 2)
            info["connected"] = connected
            rss = await asyncio.to_thread(median_rss, server, 1)
            info["server_rss_connected_mb"] = round(rss / 2**20, 1) if rss else None
            t_stream = now() + 0.2
            go = Go(t_stream, (t_stream + stagger + 0.2, t_stream + args.duration))
            info["go"] = go
            if getattr(args, "upload", None):  # an upload beside the live streams
                info["upload"] = asyncio.create_task(upload_file(args.url, args.upload,
                                                                 t_stream))
            return go

        srv.start()
        lg.start()
        for sampler in extra.values():
            sampler.start()
        t0 = now()
        try:
            if not self.workers:
                async def barrier(ok: int, failed: int) -> Go:
                    return await release(ok)

                raw = await self.driver.run(RungSpec(idx, n, clients, t_start, stagger), barrier)
            else:
                k = len(self.workers)
                conns = [conn for _, conn in self.workers]
                for w, conn in enumerate(conns):
                    conn.send(RungSpec(idx, n, clients[w::k], t_start, stagger))
                msgs = await asyncio.gather(*(asyncio.to_thread(c.recv) for c in conns))
                go = await release(sum(m[1] for m in msgs))
                for conn in conns:
                    conn.send(go)
                raw = Raw()
                for _, part in await asyncio.gather(*(asyncio.to_thread(c.recv) for c in conns)):
                    raw.merge(part)
        finally:
            await srv.stop()
            await lg.stop()
            for sampler in extra.values():
                await sampler.stop()
        wall = now() - t0
        window = info["go"].window
        lg_win = lg.window(*window)
        res = summarize(raw, n, args, window, srv.window(*window), rss_idle,
                        lg_win["cpu_pct"] if lg_win else None, wall)
        res["connect_phase_s"] = info["connect_phase_s"]
        res["server_rss_connected_mb"] = info["server_rss_connected_mb"]
        if extra:
            res["others"] = {name: sampler.window(*window) for name, sampler in extra.items()}
        if "upload" in info:
            res["upload"] = await info["upload"]
            u = res["upload"]
            print(f"  upload {args.upload.name}: HTTP {u['status']}, {u['audio_s']:.0f} s of "
                  f"audio in {u['elapsed_s']:.1f} s, {u['finals']} finals", flush=True)
        if args.raw:
            res["raw"] = {"final_ms": raw.final_ms, "server_ms": raw.server_ms,
                          "partial_lag_ms": raw.partial_lag_ms,
                          "first_partial_ms": raw.first_partial_ms}
        return res


async def upload_file(ws_url: str, path: Path, start: float) -> dict[str, Any]:
    """POST ``path`` to the native batch endpoint of the server behind ``ws_url`` once
    ``start`` comes; how long its transcript took."""
    import httpx

    url = ws_url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)
    url = url.split("/v1/", 1)[0] + "/v1/stt/transcribe"
    body = await asyncio.to_thread(path.read_bytes)
    await asyncio.sleep(max(0.0, start - now()))
    t0 = now()
    async with httpx.AsyncClient(timeout=600) as client:
        r = await client.post(url, content=body, headers={"content-type": "audio/wav"})
    elapsed = now() - t0
    segments = r.json().get("segments", []) if r.status_code == 200 else []
    audio_s = (len(body) - 44) / 2 / RATE
    return {"status": r.status_code, "elapsed_s": round(elapsed, 2),
            "audio_s": round(audio_s, 1), "speed_x_realtime": round(audio_s / elapsed, 1),
            "finals": len(segments)}


async def run_ramp(args: argparse.Namespace, runner: Runner,
                   server: ProcGroup | None) -> list[dict[str, Any]]:
    results = []
    print(table_header(), flush=True)
    for idx, n in enumerate(args.concurrency):
        if idx:
            await asyncio.sleep(args.settle)
        r = await runner.rung(idx, n, server)
        results.append(r)
        print(table_row(r), flush=True)
        if not r["slo_ok"]:
            print(f"  SLO broken at {n} clients: {'; '.join(r['slo_failures'])}", flush=True)
            if not args.no_stop:
                break
        if r["loadgen"]["loop_lag_ms"].get("p99", 0) > 50:
            print("  warning: load generator event loop lagging (p99 "
                  f"{r['loadgen']['loop_lag_ms']['p99']:.0f} ms); latencies are inflated — "
                  "try --procs", flush=True)
    return results


async def run_idle(args: argparse.Namespace, server: ProcGroup | None) -> dict[str, Any]:
    n = args.idle_sessions
    sep = "&" if "?" in args.url else "?"
    base = f"{args.url}{sep}sample_rate={RATE}"
    ready_before = http_get_json(args.url, "/ready")
    rss_idle = await asyncio.to_thread(median_rss, server, 5)
    outcomes: Counter = Counter()
    conns = []
    sem = asyncio.Semaphore(args.idle_connect_parallel)
    stop = asyncio.Event()
    all_tried = asyncio.Event()
    tried = 0

    def attempt_done() -> None:
        nonlocal tried
        tried += 1
        if tried == n:
            all_tried.set()

    async def hold(i: int) -> None:
        async with sem:
            try:
                ws = await connect(f"{base}&call_id=idle-{i}", max_queue=None, compression=None,
                                   ping_interval=None, open_timeout=args.open_timeout,
                                   close_timeout=5)
            except InvalidStatus as exc:
                outcomes[f"http_{exc.response.status_code}"] += 1
                return
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                outcomes[f"connect_{type(exc).__name__}"] += 1
                return
            finally:
                attempt_done()
        conns.append(ws)
        outcomes["open"] += 1

        async def drain() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for msg in ws:
                    if '"error"' in msg[:20]:
                        outcomes["error_msgs"] += 1

        reader = asyncio.create_task(drain())
        await stop.wait()
        if ws.close_code is not None and ws.close_code != 1000:
            outcomes[f"closed_early_{ws.close_code}"] += 1
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 5)
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader

    t0 = now()
    tasks = [asyncio.create_task(hold(i)) for i in range(n)]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_tried.wait(), args.open_timeout * 4)
    open_s = now() - t0
    await asyncio.sleep(args.idle_hold)
    ready_during = http_get_json(args.url, "/ready")
    rss_open = await asyncio.to_thread(median_rss, server, 5)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    opened = outcomes["open"]
    per = ((rss_open - rss_idle) / opened / 1024) if (server and opened) else None
    res = {
        "sessions_requested": n, "sessions_open": opened, "open_s": round(open_s, 2),
        "outcomes": dict(outcomes),
        "server_rss_idle_mb": round(rss_idle / 2**20, 1) if rss_idle is not None else None,
        "server_rss_open_mb": round(rss_open / 2**20, 1) if rss_open is not None else None,
        "rss_per_idle_session_kb": round(per, 1) if per is not None else None,
        "ready_before": ready_before, "ready_during": ready_during,
    }
    print(f"idle sessions: {opened}/{n} open in {open_s:.1f} s; server RSS "
          f"{_fmt(res['server_rss_idle_mb'], 1)} -> {_fmt(res['server_rss_open_mb'], 1)} MB; "
          f"{_fmt(res['rss_per_idle_session_kb'], 1)} KB per idle session; "
          f"outcomes {dict(outcomes)}", flush=True)
    if per is not None and per < 20:
        print("  note: a small or negative delta usually means the server reused memory freed "
              "by earlier sessions; measure on a freshly started server", flush=True)
    return res


# --------------------------------------------------------------------------------------------
# CLI.


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.load",
        description="Ramp concurrent real-time streams against /v1/stt/ws and report latency, "
                    "drops, errors and server CPU/RSS per rung.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Table columns: fps = frames/s sent in the full-concurrency window; rt = that "
               "as a fraction of real time; fin/srv = client/server final latency (ms, endpoint "
               "finals); plag = partial delivery lag; gap95 = p95 wait for a segment's next "
               "partial (from its detection, then between partials); 1stP = first-partial "
               "latency; sCPU%% = "
               "server CPU (100 = one core); sRSS = server RSS MB (max in window); MB/ses = "
               "(sRSS - idle RSS before the rung)/clients; lgCPU%% = load generator CPU; "
               "lag99 = load generator event-loop lag p99 (ms).",
    )
    p.add_argument("--url", default="ws://127.0.0.1:8011/v1/stt/ws")
    p.add_argument("--audio-dir", type=Path, default=REPO_ROOT.parent / "shared" / "eval")
    p.add_argument("--kinds", default=DEFAULT_KINDS, help="manifest kinds to use ('' = all)")
    p.add_argument("--languages", default="en", help="manifest languages ('' = all)")
    p.add_argument("--ids", default="", help="comma list of clip ids (overrides kinds/langs)")
    p.add_argument("--gap-ms", type=int, default=1000,
                   help="silence appended after every clip (>= vad_silence + preroll + 60 ms "
                        "makes clip ends endpoint and first-partial anchors exact)")
    p.add_argument("--frame-ms", type=int, choices=(20, 100), default=100)
    p.add_argument("--speed", type=float, default=1.0,
                   help="pace multiplier: 1 = real time, 0 = as fast as possible")
    p.add_argument("--concurrency", default="64,128,256,512", help="comma list of rungs")
    p.add_argument("--duration", type=float, default=30.0, help="seconds streamed per client")
    p.add_argument("--stagger", type=float, default=1.0, help="spread client starts over this")
    p.add_argument("--settle", type=float, default=3.0, help="pause between rungs (s)")
    p.add_argument("--slo-final-ms", type=float, default=100.0)
    p.add_argument("--slo-partial-lag-ms", type=float, default=0.0,
                   help="also fail a rung whose partial lag p95 is above this (0: not checked)")
    p.add_argument("--slo-partial-gap-ms", type=float, default=0.0,
                   help="also fail a rung whose p95 gap between a segment's detection and "
                   "partials (the wait for text while speaking) is above this (0: not checked)")
    p.add_argument("--upload", type=Path,
                   help="also POST this WAV file to /v1/stt/transcribe while each rung "
                   "streams (live-before-batch check); its time is in the rung's result")
    p.add_argument("--calibrate", action="store_true",
                   help="first time this machine's reference decode (bench.calibrate): "
                   "printed and stored with the results, so capacity can be scaled")
    p.add_argument("--no-stop", action="store_true", help="run every rung even after a failure")
    p.add_argument("--vad-silence-ms", type=int, default=None,
                   help="sent as vad_silence_ms; unset = server default (assumed 500)")
    p.add_argument("--partial-ms", type=int, default=None, help="sent as partial_ms")
    p.add_argument("--server-preroll-ms", type=int, default=300,
                   help="server STT_VAD_PREROLL_MS (for the first-partial anchor)")
    p.add_argument("--server-speech-start-ms", type=int, default=60,
                   help="server STT_VAD_SPEECH_START_MS (for the first-partial anchor)")
    p.add_argument("--server-pid", type=int, action="append", default=[],
                   help="server process to monitor (repeatable; children included); default: "
                        "whatever listens on the URL's port, plus its children")
    p.add_argument("--sample-interval", type=float, default=0.5)
    p.add_argument("--open-timeout", type=float, default=30.0)
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="wait this long after eos for the server to close")
    p.add_argument("--procs", type=int, default=1, help="load-generator processes")
    p.add_argument("--library-frames", action="store_true",
                   help="send through websockets' send() instead of pre-masked frames written "
                        "to the socket (costs the load generator ~4x the CPU per frame)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--idle-sessions", type=int, default=0,
                   help="instead of the ramp: hold N silent sessions open and report server "
                        "RSS per session (start the server with a high STT_IDLE_TIMEOUT_SEC)")
    p.add_argument("--idle-hold", type=float, default=3.0, help="seconds to hold idle sessions")
    p.add_argument("--idle-connect-parallel", type=int, default=64)
    p.add_argument("--out", type=Path, default=None,
                   help="JSON results (default bench/results/load-<timestamp>.json)")
    p.add_argument("--raw", action="store_true", help="include raw latency lists in the JSON")
    args = p.parse_args(argv)
    try:
        args.concurrency = [int(x) for x in str(args.concurrency).split(",") if x.strip()]
    except ValueError:
        p.error("--concurrency: expected a comma list of integers")
    if not args.idle_sessions and (not args.concurrency or min(args.concurrency) < 1):
        p.error("--concurrency needs positive integers")
    if args.speed < 0 or args.duration <= 0 or args.procs < 1:
        p.error("--speed >= 0, --duration > 0 and --procs >= 1 required")
    return args


def _csv_set(s: str) -> set[str] | None:
    items = {x.strip() for x in s.split(",") if x.strip()}
    return items or None


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def amain(args: argparse.Namespace, runner: Runner | None) -> dict[str, Any]:
    exclude = {os.getpid()} | ({p.pid for p, _ in runner.workers} if runner else set())
    server = find_server(args.url, args.server_pid, exclude)
    if server is None:
        print("warning: server process not found; no server CPU/RSS", file=sys.stderr)
    else:
        print(f"monitoring server pids {server.pids}", file=sys.stderr)
    out: dict[str, Any] = {"server_pids": server.pids if server else []}
    out["ready"] = http_get_json(args.url, "/ready")
    if args.idle_sessions:
        out["idle"] = await run_idle(args, server)
    else:
        out["rungs"] = await run_ramp(args, runner, server)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _raise_nofile()
    started = datetime.now()
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    calibration = None
    if args.calibrate:  # before any load, and before worker processes fork
        from bench.calibrate import calibrate, describe

        calibration = calibrate()
        print(describe(calibration), flush=True)
    runner = None
    playlist = None
    if not args.idle_sessions:
        t = now()
        playlist = load_playlist(args.audio_dir, _csv_set(args.kinds), _csv_set(args.languages),
                                 _csv_set(args.ids), args.frame_ms, args.gap_ms)
        print(f"{len(playlist.clip_ids)} clips, {playlist.audio_s:.0f} s of audio, "
              f"{len(playlist.frames)} frames of {args.frame_ms} ms (loaded in "
              f"{now() - t:.1f} s)", file=sys.stderr)
        extra = ""
        if args.vad_silence_ms:
            extra += f"&vad_silence_ms={args.vad_silence_ms}"
        if args.partial_ms:
            extra += f"&partial_ms={args.partial_ms}"
        ring = (args.server_preroll_ms // VAD_FRAME_MS * VAD_FRAME_MS
                + _ceil_to(args.server_speech_start_ms, VAD_FRAME_MS))
        cfg = ClientConfig(
            url=args.url, frame_ms=args.frame_ms, speed=args.speed, duration=args.duration,
            vad_silence_ms=args.vad_silence_ms or 500, ring_ms=ring,
            open_timeout=args.open_timeout, drain_timeout=args.drain_timeout, query=extra,
            prebuilt=not args.library_frames)
        runner = Runner(args, cfg, playlist)
        if args.procs > 1:
            runner.start_workers()  # fork before any event loop exists
    try:
        try:
            import uvloop
            body = uvloop.run(amain(args, runner))
            loop_name = "uvloop"
        except ImportError:
            body = asyncio.run(amain(args, runner))
            loop_name = "asyncio"
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if runner is not None:
            runner.stop_workers()
    result = {
        "tool": "bench.load",
        "started_at": started.isoformat(timespec="seconds"),
        "config": config,
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                 "websockets": websockets.__version__, "loop": loop_name},
        "clips": playlist.clip_ids if playlist else [],
        "calibration": calibration,
        **body,
    }
    if "rungs" in body:
        best = 0
        for r in body["rungs"]:  # the last rung passed before the first failure
            if not r["slo_ok"]:
                break
            best = r["clients"]
        result["max_clients_within_slo"] = best
        print(f"max clients within SLO: {result['max_clients_within_slo']}")
        if calibration:
            per_unit = best * calibration["decode_1_thread_s"]
            result["streams_x_calibration_s"] = round(per_unit, 2)
            print(f"  × reference decode {calibration['decode_1_thread_s']:.2f} s = "
                  f"{per_unit:.1f}: a CPU of {os.cpu_count()} cores whose reference decode "
                  f"takes T s holds about {per_unit:.1f} / T streams")
    out = args.out or REPO_ROOT / "bench" / "results" / f"load-{started:%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"results: {out}")
    if args.out:
        from bench.plots import save_plots

        save_plots(result, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
