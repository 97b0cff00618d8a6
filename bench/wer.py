"""Accuracy and latency through a running server: WER, words on silence, endpointing.

Streams clips of ``../shared/eval`` over ``/v1/stt/ws`` (real-time pace by default, a few
sessions at a time), and decodes the same clips offline with the server's model for the
streamed-vs-offline comparison. Usage:

    python -m bench.wer --url ws://127.0.0.1:8000/v1/stt/ws [--parallel 3] [--offline] [--batch]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import defaultdict
from pathlib import Path

import jiwer
from whisper_normalizer.english import EnglishTextNormalizer

from client.stream import read_pcm16k, stream_pcm
from config import REPO_ROOT

NATURAL = {"read", "long-form", "conversational", "command", "numbers"}
# References spell digits out ("one zero zero"); the normaliser turns only some spellings into
# digits, so this kind scores formatting, not recognition. Reported apart as well.
FORMAT_BOUND = {"numbers"}
NORMALISE = EnglishTextNormalizer()


def load_manifest(audio_dir: Path) -> list[dict]:
    lines = (audio_dir / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def reference(clip: dict) -> str:
    return clip.get("text_spoken") or clip["text"]


async def stream_clip(url: str, clip: dict, audio_dir: Path, speed: float) -> dict:
    pcm = read_pcm16k(audio_dir / clip["audio"])
    pcm += b"\x00\x00" * 16000  # 1 s of trailing silence so the last endpoint can fire
    sent_at = time.monotonic()
    finals, partial_times, first_partial = [], [], {}
    async for msg in stream_pcm(url, pcm, frame_ms=100, speed=speed):
        now = time.monotonic() - sent_at  # seconds since streaming began
        if msg["type"] == "partial":
            first_partial.setdefault(msg["segment_seq"], (now, msg["start_ms"]))
            partial_times.append(now * 1000 - msg["end_ms"] / speed if speed else None)
        elif msg["type"] == "final":
            finals.append({**msg, "received_s": now})
    return {"clip": clip, "finals": finals, "first_partial": first_partial,
            "partial_lag_ms": [p for p in partial_times if p is not None]}


async def batch_texts(url: str, clips: list[dict], audio_dir: Path) -> dict[str, str]:
    """Each clip's file as uploaded to POST /v1/stt/transcribe (its original encoding)."""
    import httpx

    http = url.replace("ws://", "http://").replace("wss://", "https://")
    http = http.split("/v1/")[0] + "/v1/stt/transcribe"
    out = {}
    async with httpx.AsyncClient(timeout=600) as client:
        for clip in clips:
            path = audio_dir / clip["audio"]
            r = await client.post(http, files={"file": (path.name, path.read_bytes())})
            r.raise_for_status()
            out[clip["id"]] = r.json()["text"]
    return out


def offline(clips: list[dict], audio_dir: Path, beam: int) -> dict[str, str]:
    import numpy as np
    from faster_whisper import WhisperModel

    from backends.whisper import bundled_model

    model = WhisperModel(bundled_model(), compute_type="int8", cpu_threads=2)
    out = {}
    for clip in clips:
        pcm = np.frombuffer(read_pcm16k(audio_dir / clip["audio"]), "<i2")
        segments, _ = model.transcribe(pcm.astype(np.float32) / 32768, language="en",
                                       beam_size=beam, condition_on_previous_text=False)
        out[clip["id"]] = " ".join(s.text.strip() for s in segments)
    return out


def wer(pairs: list[tuple[str, str]]) -> float:
    refs = [NORMALISE(r) for r, _ in pairs]
    hyps = [NORMALISE(h) for _, h in pairs]
    keep = [i for i, r in enumerate(refs) if r.strip()]
    return jiwer.wer([refs[i] for i in keep], [hyps[i] for i in keep])


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(p * len(values)))], 1)


async def run(args: argparse.Namespace) -> dict:
    audio_dir = args.audio_dir
    clips = [c for c in load_manifest(audio_dir) if c["language"] in ("en", "und")]
    sem = asyncio.Semaphore(args.parallel)

    async def one(clip):
        async with sem:
            return await stream_clip(args.url, clip, audio_dir, args.speed)

    results = await asyncio.gather(*(one(c) for c in clips))
    by_kind: dict[str, list[tuple[str, str]]] = defaultdict(list)
    silence_words = 0
    endpointing = []
    final_latency, first_partial_latency, partial_lag = [], [], []
    for r in results:
        clip = r["clip"]
        text = " ".join(f["text"] for f in r["finals"] if f["text"])
        if clip["kind"] in ("silence", "noise"):
            silence_words += len(text.split())
            continue
        by_kind[clip["kind"]].append((reference(clip), text))
        if clip.get("utterance_windows_s"):
            endpointing.append((clip["id"], len(clip["utterance_windows_s"]),
                                sum(1 for f in r["finals"] if f["text"])))
        final_latency += [f["latency_ms"] for f in r["finals"] if f["reason"] == "endpoint"]
        partial_lag += r["partial_lag_ms"]
        for t, start_ms in r["first_partial"].values() if args.speed else ():
            # speech onset ≈ segment start + pre-roll (300 ms) + speech-start run (60 ms)
            first_partial_latency.append(t * 1000 - (start_ms + 360) / args.speed)
    natural = [p for k, ps in by_kind.items() if k in NATURAL for p in ps]
    per_clip = [{"id": r["clip"]["id"], "kind": r["clip"]["kind"],
                 "wer": round(wer([(reference(r["clip"]), " ".join(
                     f["text"] for f in r["finals"] if f["text"]))]) * 100, 1)
                 if NORMALISE(reference(r["clip"])).strip() else None,
                 "text": " ".join(f["text"] for f in r["finals"] if f["text"])}
                for r in results]
    report = {
        "url": args.url, "speed": args.speed, "parallel": args.parallel,
        "streamed_wer_natural": round(wer(natural) * 100, 2),
        "streamed_wer_natural_words": round(wer(
            [p for k, ps in by_kind.items() if k in NATURAL - FORMAT_BOUND for p in ps]) * 100, 2),
        "streamed_wer_by_kind": {k: round(wer(v) * 100, 2) for k, v in sorted(by_kind.items())},
        "clips_natural": len(natural),
        "words_on_silence_and_noise": silence_words,
        "endpointing": [{"id": i, "expected": e, "found": f} for i, e, f in endpointing],
        "final_latency_ms_p50_p95": [pct(final_latency, 0.5), pct(final_latency, 0.95)],
        "first_partial_ms_p50_p95": [pct(first_partial_latency, 0.5),
                                     pct(first_partial_latency, 0.95)],
        "partial_lag_ms_p50_p95": [pct(partial_lag, 0.5), pct(partial_lag, 0.95)],
    }
    if args.batch:
        texts = await batch_texts(args.url, clips, audio_dir)
        natural_clips = [c for c in clips if c["kind"] in NATURAL]
        report["batch_wer_natural"] = round(
            wer([(reference(c), texts[c["id"]]) for c in natural_clips]) * 100, 2)
        report["batch_wer_natural_words"] = round(
            wer([(reference(c), texts[c["id"]]) for c in natural_clips
                 if c["kind"] not in FORMAT_BOUND]) * 100, 2)
        report["batch_words_on_silence_and_noise"] = sum(
            len(texts[c["id"]].split()) for c in clips if c["kind"] in ("silence", "noise"))
        for row in per_clip:
            row["batch_text"] = texts[row["id"]]
    if args.offline:
        natural_clips = [r["clip"] for r in results if r["clip"]["kind"] in NATURAL]
        texts = offline(natural_clips, audio_dir, args.beam)
        report["offline_wer_natural"] = round(
            wer([(reference(c), texts[c["id"]]) for c in natural_clips]) * 100, 2)
        report["offline_wer_natural_words"] = round(
            wer([(reference(c), texts[c["id"]]) for c in natural_clips
                 if c["kind"] not in FORMAT_BOUND]) * 100, 2)
        report["offline_beam"] = args.beam
        refs = {c["id"]: reference(c) for c in natural_clips}
        for row in per_clip:
            if row["id"] in texts:
                row["offline_wer"] = round(wer([(refs[row["id"]], texts[row["id"]])]) * 100, 1)
                row["offline_text"] = texts[row["id"]]
    report["clips"] = per_clip
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.wer", description=__doc__)
    p.add_argument("--url", default="ws://127.0.0.1:8000/v1/stt/ws")
    p.add_argument("--audio-dir", type=Path, default=REPO_ROOT.parent / "shared" / "eval")
    p.add_argument("--speed", type=float, default=1.0, help="1 = real time")
    p.add_argument("--parallel", type=int, default=3, help="sessions streaming at once")
    p.add_argument("--offline", action="store_true", help="also decode offline (same model)")
    p.add_argument("--batch", action="store_true", help="also POST each file to the batch path")
    p.add_argument("--beam", type=int, default=1, help="offline beam size")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    t0 = time.monotonic()
    report = asyncio.run(run(args))
    report["wall_s"] = round(time.monotonic() - t0, 1)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        from bench.plots import write_report

        write_report(report, args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
