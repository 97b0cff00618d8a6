"""How long a window Whisper's final decode needs: WER and cost per segment.

Cuts every natural English clip of ``../shared/eval`` into speech segments with Silero VAD
(as the server's endpointer would, 500 ms of silence), then decodes each segment:

- ``padded``: faster-whisper's ``transcribe`` (every decode in a 30 s window), and
- ``TAIL:MIN``: ``backends.whisper_decode.decode_final`` in a window of
  ``max(segment + TAIL s of silence, MIN s)``.

Usage: ``python -m bench.whisper_window padded 4:10 3:10 1:0``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from backends.whisper import bundled_model
from backends.whisper_decode import Guards, Prompts, decode_final
from bench.wer import FORMAT_BOUND, NATURAL, load_manifest, reference, wer
from client.stream import read_pcm16k
from config import REPO_ROOT


def segments(pcm: np.ndarray) -> list[np.ndarray]:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    stamps = get_speech_timestamps(pcm, VadOptions(min_silence_duration_ms=500,
                                                   speech_pad_ms=200))
    pieces = []
    for s in stamps:  # the server caps segments at 30 s (max_segment_ms)
        seg = pcm[s["start"]: s["end"]]
        pieces += [seg[i: i + 28 * 16000] for i in range(0, seg.size, 28 * 16000)]
    return pieces


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.whisper_window", description=__doc__)
    p.add_argument("modes", nargs="+", help="padded, or TAIL:MIN seconds")
    p.add_argument("--audio-dir", type=Path, default=REPO_ROOT.parent / "shared" / "eval")
    p.add_argument("--threads", type=int, default=2, help="CTranslate2 threads per decode")
    args = p.parse_args(argv)

    from faster_whisper import WhisperModel

    model = WhisperModel(bundled_model(), compute_type="int8", cpu_threads=args.threads)
    guards = Guards(0.6, -1.0, 2.4)
    prompts = Prompts(model, "en", None)
    clips = [c for c in load_manifest(args.audio_dir)
             if c["kind"] in NATURAL - FORMAT_BOUND and c["language"] == "en"]
    cut = {c["id"]: segments(np.frombuffer(read_pcm16k(args.audio_dir / c["audio"]), "<i2")
                             .astype(np.float32) / 32768) for c in clips}
    report = {"threads": args.threads, "clips": len(clips),
              "segments": sum(len(v) for v in cut.values()), "modes": {}}
    for mode in args.modes:
        pairs, cost = [], []
        for clip in clips:
            texts = []
            for seg in cut[clip["id"]]:
                t0 = time.perf_counter()
                if mode == "padded":
                    out, _ = model.transcribe(seg, language="en", beam_size=1, temperature=0.0,
                                              word_timestamps=True,
                                              condition_on_previous_text=False)
                    texts.append(" ".join(s.text.strip() for s in out))
                else:
                    tail, least = (float(x) for x in mode.split(":"))
                    texts.append(decode_final(model, prompts, seg, 1, guards, tail_s=tail,
                                              min_window_s=least).text)
                cost.append(time.perf_counter() - t0)
            pairs.append((reference(clip), " ".join(texts)))
        report["modes"][mode] = {"wer": round(wer(pairs) * 100, 2),
                                 "ms_per_segment_mean": round(float(np.mean(cost)) * 1000),
                                 "ms_per_segment_p95": round(float(np.percentile(cost, 95)) * 1000)}
        print(mode, report["modes"][mode], flush=True)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
