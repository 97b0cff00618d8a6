"""Long segments: words lost and repeated where ``max_segment_ms`` cuts pause-free speech.

    nice python -m bench.long_segments [--clips 8] [--out bench/results/long_segments.json]

**Clips.** The English read and long-form clips of ``../shared/eval``, cut into their speech
pieces by Silero VAD and joined again with every pause (inside a clip and between clips)
shortened to at most ``--gap-ms`` (60 ms: no endpoint, no pause for the cut to find), into
clips of 40–60 s of running speech; the reference is their texts in order.

**Runs.** ``sttd serve`` (the embedded default: Whisper tiny.en, Silero VAD) on a loopback
port, once per configuration: **hard cut** (``STT_MAX_SEGMENT_CUT_WINDOW_MS=0``,
``STT_MAX_SEGMENT_OVERLAP_MS=0``: the old behaviour, the segment ends at ``max_segment_ms``
wherever that falls and the next starts there); **hard cut + overlap + reach back** (no cut
window: the next segment replays 1 s before the cut, or from where the final before it
stopped short, and its repeated words are dropped); **quiet cut + overlap** (cut at a pause or
a quiet frame of the last 3 s, held back from the backend; replay and merge, no reach back:
``STT_MAX_SEGMENT_REACH_BACK_MS=0``); **quiet cut + overlap + reach back** (the defaults).
Native ``/v1/stt/ws``, each clip sent as fast as the server takes it with ``max_segment_ms``
15000 and 20000 and ``vad_silence_ms=10000``; partials off (they do not change finals). Two
sessions at once.

**Score.** The finals joined, normalised (Whisper's English normaliser) and aligned with jiwer
against the reference. **Lost at cuts**: deleted reference words within ±2 words of a cut (a
boundary between two finals); **repeated at cuts**: inserted words there that are also among
the 4 words across the cut (both segments said them; a decoder's own loop is not counted);
**WER** over all clips. **Finals short of their cut**: cut finals whose last word ends (a
stretched word taken as long as its letters allow, ``session.overlap.said_until``) more than
1.5 s before the cut, though the speech goes on: the decoder left the segment's end out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from pathlib import Path

import numpy as np

RATE = 16000
REACH = 2  # words either side of a cut that count as "at the cut"
SHORT_FINAL_MS = 1500
CONFIGS = {
    "hard cut": {"STT_MAX_SEGMENT_CUT_WINDOW_MS": "0", "STT_MAX_SEGMENT_OVERLAP_MS": "0"},
    "hard cut + overlap + reach back": {"STT_MAX_SEGMENT_CUT_WINDOW_MS": "0"},
    "quiet cut + overlap": {"STT_MAX_SEGMENT_REACH_BACK_MS": "0"},
    "quiet cut + overlap + reach back": {},
}


# -- clips -----------------------------------------------------------------------------------

def speech_pieces(pcm: np.ndarray) -> list[np.ndarray]:
    """The clip's speech, piece by piece (Silero VAD, 30 ms of padding)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    found = get_speech_timestamps(pcm.astype(np.float32) / 32768,
                                  VadOptions(speech_pad_ms=30, min_silence_duration_ms=60))
    return [pcm[t["start"]:t["end"]] for t in found]


def pause_free(sources: list[np.ndarray], gap_ms: int = 60, level: float = 3000) -> np.ndarray:
    """``sources`` cut to their speech, each brought to the same speech ``level`` (RMS: one
    speaker, one microphone; Silero VAD does not follow a sudden drop in level) and joined,
    every pause at most ``gap_ms`` of silence."""
    gap = np.zeros(RATE * gap_ms // 1000, dtype=np.int16)
    parts = []
    for pcm in sources:
        pieces = speech_pieces(pcm)
        if not pieces:
            continue
        rms = float(np.sqrt(np.mean(np.concatenate(pieces).astype(np.float64) ** 2)))
        gain = level / max(rms, 1.0)
        for piece in pieces:
            loud = np.clip(piece.astype(np.float32) * gain, -32768, 32767).astype(np.int16)
            parts += [loud, gap]
    return np.concatenate(parts[:-1]) if parts else np.zeros(0, dtype=np.int16)


def build(clips: list[dict], audio_dir: Path, n: int, seed: int, gap_ms: int,
          shortest_s: float = 40, longest_s: float = 60) -> list[dict]:
    """Up to ``n`` pause-free clips of ``shortest_s``–``longest_s`` seconds."""
    from bench.wer import reference
    from client.stream import read_pcm16k

    rng = random.Random(seed)
    pool = clips[:]
    rng.shuffle(pool)
    out, group, pcm = [], [], np.zeros(0, dtype=np.int16)
    for clip in pool:
        audio = np.frombuffer(read_pcm16k(audio_dir / clip["audio"]), np.int16)
        joined = pause_free([pcm, audio] if pcm.size else [audio], gap_ms)
        if joined.size > longest_s * RATE:
            continue  # try the next clip in this place
        group, pcm = group + [clip], joined
        if pcm.size >= shortest_s * RATE:
            out.append({"name": "+".join(c["id"] for c in group), "pcm": pcm,
                        "text": " ".join(reference(c) for c in group)})
            group, pcm = [], np.zeros(0, dtype=np.int16)
            if len(out) == n:
                break
    return out


# -- scoring ---------------------------------------------------------------------------------

def seam_errors(reference: str, finals: list[str]) -> dict:
    """Deletions and insertions within ``REACH`` words of each boundary between ``finals``,
    and all errors, of the joined finals against ``reference`` (normalised words)."""
    import jiwer
    from whisper_normalizer.english import EnglishTextNormalizer

    norm = EnglishTextNormalizer()
    ref = norm(reference).split()
    pieces = [norm(t).split() for t in finals]
    hyp = [w for p in pieces for w in p]
    cuts, at = [], 0
    for piece in pieces[:-1]:
        at += len(piece)
        cuts.append(at)
    near = lambda i: any(abs(i - c) <= REACH for c in cuts)  # noqa: E731 (hyp positions)
    lost = repeated = 0
    errors = {"substitute": 0, "delete": 0, "insert": 0}
    if ref and hyp:
        for chunk in jiwer.process_words(" ".join(ref), " ".join(hyp)).alignments[0]:
            size = max(chunk.ref_end_idx - chunk.ref_start_idx,
                       chunk.hyp_end_idx - chunk.hyp_start_idx)
            if chunk.type in errors:
                errors[chunk.type] += size
            if chunk.type == "delete" and near(chunk.hyp_start_idx):
                lost += size
            elif chunk.type == "insert":
                repeated += sum(across(hyp, cuts, i) for i in range(chunk.hyp_start_idx,
                                                                     chunk.hyp_end_idx))
    else:
        errors["delete"] = len(ref)
        errors["insert"] = len(hyp)
    return {"ref_words": len(ref), "cuts": len(cuts), "lost": lost, "repeated": repeated,
            **errors}


def across(hyp: list[str], cuts: list[int], i: int) -> bool:
    """Whether the inserted word ``hyp[i]``, near a cut, is also said just across it (the
    two segments both gave it); a decoder's own loop inside a segment is not."""
    for c in cuts:
        if abs(i - c) <= REACH:
            other = hyp[max(0, c - 2 * REACH):c] if i >= c else hyp[c:c + 2 * REACH]
            if hyp[i] in other:
                return True
    return False


def short_finals(finals: list[dict]) -> int:
    """Cut finals whose last word ends well before the cut (the decoder stopped early)."""
    from backends.base import Word
    from session.overlap import said_until

    return sum(1 for f in finals[:-1] if f["reason"] == "max_segment" and (
        not f["words"] or f["end_ms"] - said_until(Word(**f["words"][-1])) > SHORT_FINAL_MS))


# -- runs ------------------------------------------------------------------------------------

async def session(url: str, pcm: np.ndarray, max_segment_ms: int) -> list[dict]:
    from bench.lossless import stream

    got = await stream(url, pcm.tobytes(), frame_ms=100, speed=0, params=(
        f"&max_segment_ms={max_segment_ms}&vad_silence_ms=10000&partial_ms=10000"))
    if got["close"] != 1000:
        raise RuntimeError(f"session closed {got['close']}: {got['messages'][-1:]}")
    return [m for m in got["messages"] if m["type"] == "final"]


async def measure(url: str, clips: list[dict], max_segment_ms: int) -> list[dict]:
    rows = []
    for i in range(0, len(clips), 2):  # two sessions at once: the server's two cores
        batch = clips[i:i + 2]
        got = await asyncio.gather(*(session(url, c["pcm"], max_segment_ms) for c in batch))
        for clip, finals in zip(batch, got, strict=True):
            row = seam_errors(clip["text"], [f["text"] for f in finals])
            row.update(clip=clip["name"], short_finals=short_finals(finals),
                       seconds=round(clip["pcm"].size / RATE, 1))
            rows.append(row)
    return rows


def total(config: str, max_segment_ms: int, rows: list[dict]) -> dict:
    keys = ("ref_words", "cuts", "lost", "repeated", "substitute", "delete", "insert",
            "short_finals")
    out = {k: sum(r[k] for r in rows) for k in keys}
    errors = out["substitute"] + out["delete"] + out["insert"]
    out["wer_pct"] = round(100 * errors / max(1, out["ref_words"]), 2)
    return {"config": config, "max_segment_ms": max_segment_ms, "clips": len(rows), **out}


def table(rows: list[dict]) -> str:
    lines = ["| cut | max_segment_ms | clips | cuts | words lost at cuts | words repeated at "
             "cuts | finals short of their cut | WER |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['max_segment_ms']} | {r['clips']} | {r['cuts']} | "
                     f"{r['lost']} | {r['repeated']} | {r['short_finals']} | "
                     f"{r['wer_pct']} % |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from bench.lossless import Server
    from bench.wer import load_manifest
    from config import REPO_ROOT

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--gap-ms", type=int, default=60)
    ap.add_argument("--max-segment-ms", default="15000,20000")
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    eval_dir = REPO_ROOT.parent / "shared" / "eval"
    english = [c for c in load_manifest(eval_dir)
               if c["language"] == "en" and c["kind"] in ("read", "long-form")]
    clips = build(english, eval_dir, args.clips, args.seed, args.gap_ms)
    print(f"{len(clips)} clips, {sum(c['pcm'].size for c in clips) / RATE:.0f} s",
          file=sys.stderr)
    results, per_clip = [], {}
    for config, env in CONFIGS.items():
        with Server(**env) as server:
            for max_ms in map(int, args.max_segment_ms.split(",")):
                rows = asyncio.run(measure(server.ws, clips, max_ms))
                per_clip[f"{config} {max_ms}"] = rows
                results.append(total(config, max_ms, rows))
                print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(table(results))
    if args.out:
        from bench.plots import write_report

        write_report({"rows": results, "per_clip": per_clip,
                      "args": vars(args) | {"out": str(args.out)}}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
