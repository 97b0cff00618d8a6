"""End-of-turn quality: the fixed-silence rule against the word cue, on constructed turns.

    python -m bench.turns [--conversations 8] [--realtime-conversations 3] [--out FILE]

**Clips.** Conversations are built from the English read clips of ``../shared/eval`` (cut to
their speech by Silero VAD: the end of speech below is where it says the speech ends). In
the ``hesitations`` set each turn is one clip of one sentence, and in most turns a pause of
0.4–1.2 s is inserted at a natural gap between its words (the speaker hesitates and goes on);
turns are separated by 0.8–2 s of silence, and each conversation ends with 3 s of it. The
``sentence pauses`` set puts the inside pause between two sentences of one turn ("Sure.
[0.8 s] Let me check."), where neither silence nor words can tell a pause from a turn's end.
The ``endpointing`` eval clips join in with their own timing (turns more than 2 s apart).

**Runs.** ``sttd serve`` (the embedded default: Whisper tiny.en, Silero VAD) on a loopback
port, native ``/v1/stt/ws`` with the turn settings of each configuration. Decision quality is
measured in audio time, which does not depend on this machine's speed: conversations are sent
as fast as the server takes them (without loss), and an ``end_of_turn`` says at which audio
position it was decided (``decided_at_ms``). Per configuration: **turns cut early** (turns
with an end of turn decided while the speaker still had words to say), **late** (no end of
turn before the next turn began, or none at all), and **end of speech → decision** p50/p95
(the end of the turn's speech to the decision). Then a **real-time** pass (100 ms
frames at a microphone's pace, two sessions at once on the server's two cores, the client
in this process) gives wall-clock **end of speech → end_of_turn received**, which adds the
final's decode.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.lossless import Server
from bench.wer import load_manifest
from client.stream import read_pcm16k
from config import REPO_ROOT

RATE = 16000
EVAL = REPO_ROOT.parent / "shared" / "eval"
HOP = RATE // 100  # 10 ms energy frames
DEBUG = False
# A decision this close before the measured end of speech is the two VADs' disagreement (a
# quiet last syllable), not a speaker who goes on.
EARLY_TOLERANCE_S = 0.1


@dataclass(frozen=True)
class Config:
    name: str
    query: str  # native turn parameters


def cue(low: int, middle: int, high: int) -> Config:
    return Config(f"cue {low}/{middle}/{high}", f"&turn_silence_ms={middle}"
                  f"&turn_min_silence_ms={low}&turn_max_silence_ms={high}")


CONFIGS = [
    Config("fixed 1000 ms", "&turn_silence_ms=1000"),
    Config("fixed 1300 ms", "&turn_silence_ms=1300"),
    Config("fixed 1600 ms", "&turn_silence_ms=1600"),
    cue(400, 1300, 2000),
    cue(600, 1500, 2500),
    cue(800, 1600, 2500),
]
REALTIME = (CONFIGS[0], CONFIGS[3])


@dataclass
class Conversation:
    pcm: np.ndarray
    turns: list[tuple[float, float]] = field(default_factory=list)  # speech start, end (s)
    pauses: list[tuple[float, float]] = field(default_factory=list)  # inside a turn (s)
    name: str = ""


def rms(pcm: np.ndarray) -> np.ndarray:
    frames = pcm[: pcm.size // HOP * HOP].astype(np.float32).reshape(-1, HOP)
    return np.sqrt(np.mean(frames * frames, axis=1))


def speech(pcm: np.ndarray) -> list[tuple[int, int]]:
    """Where the clip's speech is (samples), by Silero VAD with no padding: energy alone
    takes a click or a breath 3 s after the last word for speech."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    found = get_speech_timestamps(pcm.astype(np.float32) / 32768,
                                  VadOptions(speech_pad_ms=0, min_silence_duration_ms=100))
    return [(t["start"], t["end"]) for t in found]


def trim(pcm: np.ndarray) -> np.ndarray:
    """The clip from the start of its speech to the end of it."""
    bounds = speech(pcm)
    return pcm[bounds[0][0]:bounds[-1][1]] if bounds else pcm[:0]


def word_gaps(pcm: np.ndarray, margin_s: float = 0.8) -> list[int]:
    """Samples in the middle of the clip's quiet runs (≥ 40 ms below 15 % of its speech
    level, at least ``margin_s`` from either end): gaps between words, where a speaker
    could stop and go on."""
    energy = rms(pcm)
    level = np.median(energy[energy > 0.1 * energy.max()])
    quiet = energy < 0.15 * level
    gaps, run = [], 0
    for i, q in enumerate(quiet):
        run = run + 1 if q else 0
        if run == 4:
            gaps.append((i - 2) * HOP)
    m = int(margin_s * RATE)
    return [g for g in gaps if m <= g <= pcm.size - m]


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.int16)


def one_sentence(text: str) -> bool:
    """No sentence ends inside the clip's reference text (a pause cut there would not be a
    hesitation)."""
    return not re.search(r"[.?!;:]\s", text.strip())


def clips(kinds: set[str], sentences=lambda text: True) -> list[tuple[str, np.ndarray]]:
    out = []
    for clip in load_manifest(EVAL):
        if clip["kind"] in kinds and clip["language"] == "en" and clip["duration_s"] <= 15 \
                and sentences(clip["text"]):
            pcm = trim(np.frombuffer(read_pcm16k(EVAL / clip["audio"]), np.int16))
            if pcm.size > 2 * RATE:
                out.append((clip["id"], pcm))
    return out


def build(sources: list[tuple[str, np.ndarray]], n: int, turns: int, seed: int,
          sentence_pauses: bool) -> list[Conversation]:
    """``n`` conversations of ``turns`` turns each (see the module docstring)."""
    rng = random.Random(seed)
    out = []
    for c in range(n):
        conv, parts = Conversation(np.zeros(0, np.int16), name=f"conv{c}"), []
        t = 0.0

        def add(pcm: np.ndarray, parts: list = parts) -> None:
            nonlocal t
            parts.append(pcm)
            t += pcm.size / RATE

        add(silence(0.5))
        for _ in range(turns):
            start = t
            if sentence_pauses:
                (_, a), (_, b) = rng.sample(sources, 2)
                add(a)
                pause = rng.uniform(0.4, 1.2)
                conv.pauses.append((t, t + pause))
                add(silence(pause))
                add(b)
            else:
                _, pcm = rng.choice(sources)
                gaps = word_gaps(pcm)
                if gaps and rng.random() < 0.8:
                    cut = rng.choice(gaps)
                    add(pcm[:cut])
                    pause = rng.uniform(0.4, 1.2)
                    conv.pauses.append((t, t + pause))
                    add(silence(pause))
                    add(pcm[cut:])
                else:
                    add(pcm)
            conv.turns.append((start, t))
            add(silence(rng.uniform(0.8, 2.0)))
        add(silence(3.0))
        conv.pcm = np.concatenate(parts)
        out.append(conv)
    return out


def eval_turns() -> list[Conversation]:
    """The ``endpointing`` eval clips: turns are speech separated by more than 2 s."""
    out = []
    for clip in load_manifest(EVAL):
        if clip["kind"] != "endpointing" or clip["language"] != "en":
            continue
        pcm = np.concatenate([np.frombuffer(read_pcm16k(EVAL / clip["audio"]), np.int16),
                              silence(3.0)])
        conv, bounds = Conversation(pcm, name=clip["id"]), speech(pcm)
        start, end = bounds[0]
        for s, e in bounds[1:]:
            if s - end > 2 * RATE:
                conv.turns.append((start / RATE, end / RATE))
                start = s
            end = e
        conv.turns.append((start / RATE, end / RATE))
        out.append(conv)
    return out


async def session(server: Server, conv: Conversation, query: str, realtime: bool) -> list:
    """(receive time s, message) for each ``end_of_turn`` and ``final``; frames of 100 ms,
    paced like a microphone (frame k sent at (k + 1) × 100 ms) or as fast as the server
    takes them."""
    from websockets.asyncio.client import connect

    url = f"{server.ws}?call_id=turns&sample_rate={RATE}{query}"
    if not realtime:
        url += "&partial_ms=10000"  # audio time only: skip partial decodes
    data, step, out = conv.pcm.tobytes(), RATE * 2 // 10, []
    async with connect(url, max_size=None, ping_interval=None) as ws:
        t0 = time.monotonic()

        async def read() -> None:
            async for raw in ws:
                msg = json.loads(raw)
                if msg["type"] in ("end_of_turn", "final"):
                    out.append((time.monotonic() - t0, msg))
                elif msg["type"] == "error":
                    raise RuntimeError(msg)

        reader = asyncio.create_task(read())
        for k, i in enumerate(range(0, len(data), step)):
            if realtime:
                await asyncio.sleep(max(0.0, t0 + (k + 1) * 0.1 - time.monotonic()))
            await ws.send(data[i:i + step])
        await ws.send('{"type":"eos"}')
        await asyncio.wait_for(reader, 300)
    return out


def score(conv: Conversation, eots: list) -> dict:
    """Early and late fires and latencies of one session's ``end_of_turn`` messages."""
    early, late, decision, wall = set(), 0, [], []
    detected: dict[int, tuple[float, float]] = {}
    last_final = ""
    for received, msg in eots:
        if msg["type"] == "final":
            last_final = msg["text"] or last_final
            continue
        decided = msg["decided_at_ms"] / 1000
        word = msg["last_word_end_ms"] / 1000
        turn = max((i for i, (s, _) in enumerate(conv.turns) if s <= word + 0.05), default=0)
        if decided < conv.turns[turn][1] - EARLY_TOLERANCE_S:
            early.add(turn)  # the speaker had more to say in this turn
            if DEBUG:
                print(f"  early {conv.name} turn {turn} at {decided:.2f} "
                      f"(cue {msg['cue']}): ...{last_final[-50:]!r}", file=sys.stderr)
        else:
            detected.setdefault(turn, (decided, received))
    for i, (_, end) in enumerate(conv.turns):
        nxt = conv.turns[i + 1][0] if i + 1 < len(conv.turns) else float("inf")
        hit = detected.get(i)
        if hit is None or hit[0] >= nxt:
            late += 1
            continue
        decision.append((hit[0] - end) * 1000)
        wall.append((hit[1] - end) * 1000)
    return {"early": len(early), "late": late, "decision_ms": decision, "wall_ms": wall}


def pct(values: list[float], p: float) -> float | None:
    return round(float(np.percentile(values, p))) if values else None


def summary(name: str, scores: list[dict], turns: int, pauses: int) -> dict:
    dec = [v for s in scores for v in s["decision_ms"]]
    wall = [v for s in scores for v in s["wall_ms"]]
    early, late = sum(s["early"] for s in scores), sum(s["late"] for s in scores)
    return {"config": name, "turns": turns, "pauses": pauses, "early": early,
            "early_pct": round(100 * early / max(1, turns), 1), "late": late,
            "late_pct": round(100 * late / max(1, turns), 1),
            "decision_p50_ms": pct(dec, 50), "decision_p95_ms": pct(dec, 95),
            "wall_p50_ms": pct(wall, 50), "wall_p95_ms": pct(wall, 95)}


async def measure(server: Server, sets: dict[str, list[Conversation]], configs,
                  realtime: bool, parallel: int) -> list[dict]:
    rows = []
    for config in configs:
        for set_name, convs in sets.items():
            jobs = [(conv, config) for conv in convs]
            scores = []
            for i in range(0, len(jobs), parallel):
                batch = jobs[i:i + parallel]
                got = await asyncio.gather(*(session(server, c, k.query, realtime)
                                             for c, k in batch))
                scores += [score(c, e) for (c, _), e in zip(batch, got, strict=True)]
            row = summary(config.name, scores, sum(len(c.turns) for c in convs),
                          sum(len(c.pauses) for c in convs))
            row["set"], row["realtime"] = set_name, realtime
            if not realtime:
                row.pop("wall_p50_ms"), row.pop("wall_p95_ms")
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


async def realtime_measure(server: Server, convs: list[Conversation]) -> list[dict]:
    """The ``REALTIME`` configurations side by side: one session each, at once."""
    scores: dict[str, list[dict]] = {c.name: [] for c in REALTIME}
    for conv in convs:
        got = await asyncio.gather(*(session(server, conv, c.query, True) for c in REALTIME))
        for config, eots in zip(REALTIME, got, strict=True):
            scores[config.name].append(score(conv, eots))
    rows = []
    for config in REALTIME:
        row = summary(config.name, scores[config.name], sum(len(c.turns) for c in convs),
                      sum(len(c.pauses) for c in convs))
        row["set"], row["realtime"] = "hesitations, real time", True
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| set | rule | turns | inside pauses | turns cut early | late | "
             "end of speech → decision p50/p95 ms | → end_of_turn received p50/p95 ms |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        wall = (f"{r['wall_p50_ms']}/{r['wall_p95_ms']}" if r.get("realtime") else "")
        lines.append(f"| {r['set']} | {r['config']} | {r['turns']} | {r['pauses']} | "
                     f"{r['early']} ({r['early_pct']} %) | {r['late']} ({r['late_pct']} %) | "
                     f"{r['decision_p50_ms']}/{r['decision_p95_ms']} | {wall} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conversations", type=int, default=8)
    ap.add_argument("--turns", type=int, default=8)
    ap.add_argument("--realtime-conversations", type=int, default=3)
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--debug", action="store_true", help="print each early fire's context")
    ap.add_argument("--configs", help="comma-separated indexes into CONFIGS (default: all)")
    args = ap.parse_args(argv)
    global DEBUG
    DEBUG = args.debug
    sources = clips({"read"})
    single = clips({"read"}, one_sentence)
    sets = {
        "hesitations": build(single, args.conversations, args.turns, args.seed, False),
        "sentence pauses": build(sources, max(1, args.conversations // 2), args.turns,
                                 args.seed + 1, True),
        "endpointing clips": eval_turns(),
    }
    realtime = {"hesitations": sets["hesitations"][:args.realtime_conversations]}
    print(f"{len(sources)} source clips ({len(single)} of one sentence); " + ", ".join(
        f"{k}: {sum(len(c.turns) for c in v)} turns, {sum(len(c.pauses) for c in v)} pauses"
        for k, v in sets.items()), file=sys.stderr)
    with Server() as server:
        configs = ([CONFIGS[int(i)] for i in args.configs.split(",")] if args.configs
                   else CONFIGS)
        rows = asyncio.run(measure(server, sets, configs, False, parallel=2))
        if args.realtime_conversations:
            rows += asyncio.run(realtime_measure(server, realtime["hesitations"]))
    print(table(rows))
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "args": vars(args) | {
            "out": str(args.out)}}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
