"""Lossless ingest, measured: clients faster than real time lose nothing, live clients of an
overloaded server are shed (counted, told, latency bounded), SIGTERM finishes every segment.

Each scenario starts its own ``sttd serve`` (a subprocess on a free loopback port) and drives
it from this process, so server and clients share the machine's cores. Usage:

    python -m bench.lossless whisper   # sttd stream --speed 0 on a 62 s talk vs the batch endpoint
    python -m bench.lossless mock      # 64 unpaced clients (20 ms frames, 30 s) vs one paced run
    python -m bench.lossless overload  # real-time clients, a backend too slow for them
    python -m bench.lossless pace      # how far real-time clients run ahead (the tolerance)
    python -m bench.lossless drain     # SIGTERM with 32 live sessions and 2 uploads running
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import wave
from pathlib import Path

import numpy as np

from config import REPO_ROOT
from observability.metrics import scraped_samples

BIN = Path(sys.executable).parent
EVAL = REPO_ROOT.parent / "shared" / "eval"
RATE = 16000


# -- a server under test ---------------------------------------------------------------------

class Server:
    checkout = REPO_ROOT  # --baseline: serve another checkout of sttd (a before/after run)

    def __init__(self, log: Path | None = None, **env: str) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = log
        level = "info" if log else "warning"
        self.env = {**os.environ, "STT_LOG_LEVEL": level, "STT_LOG_JSON": "true", **env}
        self.proc: subprocess.Popen | None = None

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stt/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", "--port", str(self.port)],
            cwd=self.checkout, env=self.env, stdout=subprocess.DEVNULL,
            stderr=self.log.open("w") if self.log else subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.http + "/ready", timeout=2):
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    raise SystemExit("server exited during start-up") from None
                time.sleep(0.2)
        raise SystemExit("server never became ready")

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(60)

    def closed_sessions(self) -> list[dict]:
        """The ``session.closed`` log lines (servers started with ``log=``)."""
        lines = self.log.read_text().splitlines() if self.log else []
        return [e for e in map(_json_or_none, lines) if e and e.get("event") == "session.closed"]

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(self.http + "/metrics", timeout=10) as r:
            return scraped_samples(r.read().decode())


def _json_or_none(line: str) -> dict | None:
    try:
        return json.loads(line)
    except ValueError:
        return None


# -- a plain native-protocol client ----------------------------------------------------------

async def stream(url: str, pcm: bytes, *, frame_ms: int, speed: float,
                 params: str = "") -> dict:
    """Send ``pcm`` (speed 1 = real time, 0 = unpaced), then eos; every message with its
    receive time (seconds after the first frame was sent)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    step = RATE * 2 * frame_ms // 1000
    out: dict = {"messages": [], "times": []}
    async with connect(f"{url}?call_id=b&sample_rate={RATE}{params}", max_size=None,
                       ping_interval=None) as ws:
        loop = asyncio.get_running_loop()
        t0 = loop.time()

        async def reader() -> None:
            try:
                async for raw in ws:
                    out["messages"].append(json.loads(raw))
                    out["times"].append(loop.time() - t0)
            except ConnectionClosed:
                pass

        task = asyncio.create_task(reader())
        try:
            for n, i in enumerate(range(0, len(pcm), step)):
                if speed:
                    await asyncio.sleep(max(0.0, t0 + n * frame_ms / 1000 / speed - loop.time()))
                await ws.send(pcm[i : i + step])
            out["sent_s"] = loop.time() - t0
            await ws.send('{"type":"eos"}')
        except ConnectionClosed:
            out["sent_s"] = loop.time() - t0
        await task
        out["close"] = ws.close_code
        out["wall_s"] = loop.time() - t0
    return out


def finals(result: dict) -> list[tuple]:
    return [(m["text"], m["start_ms"], m["end_ms"], m["reason"])
            for m in result["messages"] if m["type"] == "final"]


def dropped_ms(result: dict) -> int:
    warnings = [m for m in result["messages"] if m["type"] == "warning"]
    return warnings[-1]["total_dropped_ms"] if warnings else 0


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(p * len(values)))], 1)


def fixture_mix(seconds: float) -> bytes:
    """Reference clips the mock knows, back to back with 1 s of silence, cut to length."""
    from backends.fixtures import load_fixtures

    clips = [f for f in load_fixtures(REPO_ROOT / "references") if f.text]
    gap = np.zeros(RATE, dtype=np.int16)
    parts, total = [], 0
    while total < seconds * RATE:
        for clip in clips:
            parts += [clip.pcm(), gap]
            total += clip.pcm().size + gap.size
    pcm = np.concatenate(parts)[: int(seconds * RATE)]
    return pcm.tobytes()


# -- scenarios --------------------------------------------------------------------------------

def whisper(args) -> dict:
    """``sttd stream FILE --speed 0`` (the project's own client) against the batch endpoint."""
    import httpx
    import jiwer

    from bench.wer import NORMALISE

    clip = next(json.loads(line) for line in (EVAL / "manifest.jsonl").open()
                if json.loads(line)["id"] == args.clip)
    path = EVAL / clip["audio"]
    with wave.open(str(path)) as w:
        audio_s = w.getnframes() / w.getframerate()
    with Server(STT_BACKEND="whisper") as server:
        started = time.monotonic()
        out = subprocess.run([BIN / "sttd", "stream", str(path), "--speed", "0", "--json",
                              "--url", server.ws], capture_output=True, text=True, check=True)
        stream_s = time.monotonic() - started
        messages = [json.loads(line) for line in out.stdout.splitlines()]
        streamed = " ".join(m["text"] for m in messages if m["type"] == "final" and m["text"])
        warned = [m for m in messages if m["type"] == "warning"]
        m = server.metrics()
        started = time.monotonic()
        r = httpx.post(server.http + "/v1/stt/transcribe",
                       files={"file": (path.name, path.read_bytes())}, timeout=600)
        batch_s = time.monotonic() - started
        r.raise_for_status()
        batch = r.json()["text"]
    ref = NORMALISE(clip["text"])
    return {
        "clip": clip["id"], "audio_s": round(audio_s, 1),
        "stream_wall_s": round(stream_s, 1), "stream_x_audio": round(stream_s / audio_s, 3),
        "batch_wall_s": round(batch_s, 1), "batch_x_audio": round(batch_s / audio_s, 3),
        "dropped_ms_told": warned[-1]["total_dropped_ms"] if warned else 0,
        "dropped_s_metric": m['stt_audio_dropped_seconds_total{reason="queue_full"}'],
        "held_s_metric": round(m.get("stt_ingest_held_seconds_total", 0), 1),
        "stream_wer": round(jiwer.wer(ref, NORMALISE(streamed)), 4),
        "batch_wer": round(jiwer.wer(ref, NORMALISE(batch)), 4),
        "identical_text": NORMALISE(streamed) == NORMALISE(batch),
        "stream_text": streamed, "batch_text": batch,
    }


def mock(args) -> dict:
    pcm = fixture_mix(args.seconds)
    with Server(STT_BACKEND="mock", STT_VAD="energy") as server:
        paced = asyncio.run(stream(server.ws, pcm, frame_ms=20, speed=1.0))
        reference = finals(paced)

        async def many():
            return await asyncio.gather(*(stream(server.ws, pcm, frame_ms=20, speed=0)
                                          for _ in range(args.clients)))

        started = time.monotonic()
        fast = asyncio.run(many())
        wall = time.monotonic() - started
        m = server.metrics()
    return {
        "server": str(Server.checkout), "clients": args.clients, "audio_s_each": args.seconds,
        "frame_ms": 20,
        "paced_finals": len(reference), "paced_close": paced["close"],
        "unpaced_wall_s": round(wall, 1),
        "unpaced_audio_x_real_time": round(args.clients * args.seconds / wall, 1),
        "identical_to_paced": sum(finals(r) == reference for r in fast),
        "closed_1000": sum(r["close"] == 1000 for r in fast),
        "dropped_ms_told": sum(dropped_ms(r) for r in fast),
        "dropped_s_metric": m['stt_audio_dropped_seconds_total{reason="queue_full"}'],
        "held_s_metric": round(m.get("stt_ingest_held_seconds_total", 0), 1),
        "received_s": round(m["stt_audio_received_seconds_total"], 1),
        "processed_s": round(m["stt_audio_processed_seconds_total"], 1),
    }


def overload(args) -> dict:
    """Real-time clients; the mock made slow enough that one thread cannot keep up."""
    pcm = fixture_mix(args.seconds)
    env = {"STT_BACKEND": "mock", "STT_VAD": "energy", "STT_MOCK_DELAY_MS": str(args.delay_ms),
           "STT_INFERENCE_THREADS": "1", "STT_IN_QUEUE_MS": str(args.in_queue_ms),
           "STT_IN_QUEUE_MAX_DROP_MS": "600000"}
    with Server(**env) as server:
        async def many():
            return await asyncio.gather(*(stream(server.ws, pcm, frame_ms=100, speed=1.0)
                                          for _ in range(args.clients)))

        results = asyncio.run(many())
        m = server.metrics()
    # A final's delay behind real time: received − when its last audio was sent (end_ms).
    behind = [t * 1000 - msg["end_ms"] for r in results
              for msg, t in zip(r["messages"], r["times"], strict=True)
              if msg["type"] == "final" and msg["reason"] == "endpoint"]
    server_ms = [msg["latency_ms"] for r in results for msg in r["messages"]
                 if msg["type"] == "final"]
    told = [dropped_ms(r) for r in results]
    warnings = sum(1 for r in results for msg in r["messages"] if msg["type"] == "warning")
    return {
        "clients": args.clients, "audio_s_each": args.seconds, "delay_ms": args.delay_ms,
        "in_queue_ms": args.in_queue_ms,
        "dropped_ms_told_total": sum(told), "dropped_s_metric":
            round(m['stt_audio_dropped_seconds_total{reason="queue_full"}'], 2),
        "sessions_shedding": sum(1 for t in told if t), "warnings": warnings,
        "held_s_metric": round(m.get("stt_ingest_held_seconds_total", 0), 2),
        "finals": len(server_ms), "closed_1000": sum(r["close"] == 1000 for r in results),
        "final_behind_real_time_ms": {"p50": pct(behind, 0.5), "p95": pct(behind, 0.95),
                                      "max": max(behind, default=None)},
        "final_latency_ms_server": {"p50": pct(server_ms, 0.5), "p95": pct(server_ms, 0.95),
                                    "max": max(server_ms, default=None)},
    }


def pace(args) -> dict:
    """How far real-time clients run ahead of the wall clock, as the server measures it
    (``max_ahead_ms`` of each session): what the pace tolerance must cover."""
    import tempfile

    pcm = fixture_mix(args.seconds)
    log = Path(tempfile.mkdtemp()) / "server.log"
    out = {}
    with Server(log=log, STT_BACKEND="mock", STT_VAD="energy",
                STT_MOCK_DELAY_MS=str(args.delay_ms)) as server:
        for frame_ms in (20, 100):
            async def many(frame_ms=frame_ms):
                return await asyncio.gather(*(stream(server.ws, pcm, frame_ms=frame_ms,
                                                     speed=1.0)
                                              for _ in range(args.clients)))

            asyncio.run(many())
            time.sleep(1.0)
            ahead = [c["max_ahead_ms"] for c in server.closed_sessions()][-args.clients:]
            out[f"{frame_ms}ms_frames_max_ahead_ms"] = {
                "p50": pct(ahead, 0.5), "p95": pct(ahead, 0.95), "max": max(ahead)}
    return {"clients": args.clients, "audio_s_each": args.seconds, "delay_ms": args.delay_ms,
            **out}


def drain(args) -> dict:
    import httpx

    speech = np.frombuffer(fixture_mix(60), dtype=np.int16)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(RATE)
        w.writeframes(speech.tobytes())
    body = buf.getvalue()
    live = np.frombuffer(fixture_mix(30), dtype=np.int16)
    live = live[np.argmax(np.abs(live) > 1000):].tobytes()  # start in speech
    server = Server(STT_BACKEND="mock", STT_VAD="energy", STT_DRAIN_TIMEOUT_SEC="30")
    with server:
        async def upload() -> tuple[int, float]:
            async def chunks():
                for i in range(0, len(body), len(body) // 20):
                    yield body[i : i + len(body) // 20]
                    await asyncio.sleep(0.2)

            async with httpx.AsyncClient(timeout=120) as client:
                r = await client.post(server.http + "/v1/stt/transcribe", content=chunks(),
                                      headers={"Content-Type": "audio/wav"})
            return r.status_code, r.json().get("duration_ms", 0) / 1000

        async def scenario():
            sessions = [asyncio.create_task(stream(server.ws, live, frame_ms=100, speed=1.0))
                        for _ in range(args.clients)]
            uploads = [asyncio.create_task(upload()) for _ in range(2)]
            await asyncio.sleep(3.0)
            signalled = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            results = await asyncio.gather(*sessions)
            last_close = time.monotonic() - signalled
            answers = await asyncio.gather(*uploads)
            code = await asyncio.to_thread(server.proc.wait, 60)
            return results, answers, last_close, time.monotonic() - signalled, code

        results, answers, last_close, exited, code = asyncio.run(scenario())
    return {
        "sessions": args.clients,
        "final_reason_shutdown": sum(finals(r)[-1:] and finals(r)[-1][3] == "shutdown"
                                     for r in results),
        "closed_1012": sum(r["close"] == 1012 for r in results),
        "uploads": [{"status": s, "audio_s": d} for s, d in answers],
        "last_session_closed_after_signal_s": round(last_close, 2),
        "exited_after_signal_s": round(exited, 2), "exit_code": code,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="scenario", required=True)
    w = sub.add_parser("whisper")
    w.add_argument("--clip", default="kgs_bill_gates_ted")
    m = sub.add_parser("mock")
    m.add_argument("--clients", type=int, default=64)
    m.add_argument("--seconds", type=float, default=30.0)
    o = sub.add_parser("overload")
    o.add_argument("--clients", type=int, default=16)
    o.add_argument("--seconds", type=float, default=30.0)
    o.add_argument("--delay-ms", type=float, default=150.0)
    o.add_argument("--in-queue-ms", type=int, default=5000)
    p = sub.add_parser("pace")
    p.add_argument("--clients", type=int, default=128)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--delay-ms", type=float, default=0.0)
    d = sub.add_parser("drain")
    d.add_argument("--clients", type=int, default=32)
    parser.add_argument("--baseline", type=Path,
                        help="serve this checkout instead (e.g. a worktree of an older commit)")
    args = parser.parse_args(argv)
    if args.baseline:
        Server.checkout = args.baseline.resolve()
    result = {"whisper": whisper, "mock": mock, "overload": overload, "pace": pace,
              "drain": drain}[
        args.scenario](args)
    print(json.dumps({"scenario": args.scenario, **result}, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
