"""Would decoding finals that fall due together as one batch pay on a CPU? Cost per segment
of the final decode's stages at batch sizes 1, 2, 4 (tiny.en int8, one CTranslate2 thread).

Cuts the natural English eval clips into segments as ``bench.whisper_window`` does, pads
each as ``decode_final`` does (segment + 4 s, at least 10 s), then times, per batch of
``B`` segments of similar length: the encoder over the batch, ``generate`` over the batch
(beam 1, timestamps, the final's caps), and the word alignment. Reported as milliseconds per
segment, so a batch pays where its figure is below batch size 1's.

    python -m bench.final_batch [--sizes 1,2,4] [--limit 48]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from backends.whisper import bundled_model
from backends.whisper_decode import _HOP, RATE, Prompts, _text_within
from bench.wer import FORMAT_BOUND, NATURAL, load_manifest
from bench.whisper_window import segments
from client.stream import read_pcm16k
from config import REPO_ROOT


def padded(seg: np.ndarray, window: int) -> np.ndarray:
    out = np.zeros(window, dtype=np.float32)
    out[: seg.size] = seg
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.final_batch", description=__doc__)
    p.add_argument("--audio-dir", type=Path, default=REPO_ROOT.parent / "shared" / "eval")
    p.add_argument("--sizes", default="1,2,4")
    p.add_argument("--limit", type=int, default=48, help="segments timed per size")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)

    import ctranslate2
    from faster_whisper import WhisperModel

    model = WhisperModel(bundled_model(), compute_type="int8", cpu_threads=1)
    tokenizer, prompt = Prompts(model, "en", None).get("en", timestamps=True)
    clips = [c for c in load_manifest(args.audio_dir)
             if c["kind"] in NATURAL - FORMAT_BOUND and c["language"] == "en"]
    segs = [s for c in clips for s in segments(
        np.frombuffer(read_pcm16k(args.audio_dir / c["audio"]), "<i2").astype(np.float32)
        / 32768)]
    segs = sorted(segs, key=len)[: args.limit]  # similar lengths batch together, as due ones
    report: dict = {"segments": len(segs), "threads": 1, "sizes": {}}
    for size in (int(x) for x in args.sizes.split(",")):
        stages = {"encode": 0.0, "generate": 0.0, "align": 0.0}
        for i in range(0, len(segs) - size + 1, size):
            batch = segs[i: i + size]
            window = max(max(s.size for s in batch) + 4 * RATE, 10 * RATE)
            feats = np.stack([model.feature_extractor(padded(s, window), padding=0)
                              [:, : window // _HOP] for s in batch])
            t0 = time.perf_counter()
            encoded = model.model.encode(ctranslate2.StorageView.from_array(feats),
                                         to_cpu=False)
            t1 = time.perf_counter()
            results = model.model.generate(
                encoded, [prompt] * size, beam_size=1, max_length=min(
                    model.max_length, len(prompt) + 8 + int(window / RATE * 8)),
                return_scores=True, return_no_speech_prob=True, suppress_blank=True,
                suppress_tokens=[-1], max_initial_timestamp_index=50)
            t2 = time.perf_counter()
            ids = [_text_within(r.sequences_ids[0], tokenizer, s.size / RATE)
                   for r, s in zip(results, batch, strict=True)]
            if all(ids):
                model.find_alignment(tokenizer, ids, encoded, window // _HOP)
            t3 = time.perf_counter()
            stages["encode"] += t1 - t0
            stages["generate"] += t2 - t1
            stages["align"] += t3 - t2
        n = len(segs) // size * size
        per = {k: round(v / n * 1000, 1) for k, v in stages.items()}
        per["total"] = round(sum(per.values()), 1)
        report["sizes"][size] = per
        print(f"batch {size}: ms per segment {per}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
