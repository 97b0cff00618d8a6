"""Character error rate and real-time factor for non-English clips (the Kaldi Korean model).

Streams every clip of ``--language`` in ``../shared/eval`` through ``/v1/stt/ws`` and scores
characters with spaces and punctuation removed (vosk's Korean model writes morphemes apart, so
word error rate would measure spacing); the real-time factor is the server's own
``stt_inference_seconds`` over the audio it processed, read from ``/metrics`` before and after.

    python -m bench.cer --url ws://127.0.0.1:8015/v1/stt/ws --language ko [--n-best 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import urllib.request
from pathlib import Path

import jiwer
from prometheus_client.parser import text_string_to_metric_families

from bench.wer import load_manifest, reference, stream_clip
from config import REPO_ROOT


def chars(text: str) -> str:
    return "".join(c for c in text if c.isalnum())


def scrape(url: str) -> dict[str, float]:
    http = url.replace("ws://", "http://").split("/v1/")[0] + "/metrics"
    with urllib.request.urlopen(http, timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in ("stt_inference_seconds_sum", "stt_audio_processed_seconds_total"):
                out[s.name] = out.get(s.name, 0.0) + s.value
    return out


async def run(args: argparse.Namespace) -> dict:
    clips = [c for c in load_manifest(args.audio_dir) if c["language"] == args.language]
    url = f"{args.url}&" if "?" in args.url else f"{args.url}?"
    before = scrape(args.url)
    rows = []
    for clip in clips:
        query = f"{url}call_id=cer&sample_rate=16000&n_best={args.n_best}&language={args.language}"
        r = await stream_clip(query.replace("?&", "?"), clip, args.audio_dir, args.speed)
        text = " ".join(f["text"] for f in r["finals"] if f["text"])
        alts = [len(f.get("alternatives", [])) for f in r["finals"] if f["text"]]
        rows.append({"id": clip["id"], "reference": reference(clip), "text": text,
                     "cer": round(jiwer.cer(chars(reference(clip)), chars(text)) * 100, 1),
                     "alternatives_per_final": alts})
    after = scrape(args.url)
    audio = (after.get("stt_audio_processed_seconds_total", 0.0)
             - before.get("stt_audio_processed_seconds_total", 0.0))
    compute = (after.get("stt_inference_seconds_sum", 0.0)
               - before.get("stt_inference_seconds_sum", 0.0))
    refs = [chars(r["reference"]) for r in rows]
    hyps = [chars(r["text"]) for r in rows]
    return {"language": args.language, "clips": len(rows),
            "cer": round(jiwer.cer(refs, hyps) * 100, 2) if rows else None,
            "rtf_inference": round(compute / audio, 4) if audio else None,
            "audio_s": round(audio, 2), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cer", description=__doc__)
    p.add_argument("--url", default="ws://127.0.0.1:8000/v1/stt/ws")
    p.add_argument("--audio-dir", type=Path, default=REPO_ROOT.parent / "shared" / "eval")
    p.add_argument("--language", default="ko")
    p.add_argument("--n-best", type=int, default=1)
    p.add_argument("--speed", type=float, default=1.0, help="1 = real time, 0 = as fast as taken")
    args = p.parse_args(argv)
    print(json.dumps(asyncio.run(run(args)), indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
