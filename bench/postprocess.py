"""What the external post-processor (``STT_POSTPROCESSOR``) costs per final, and what a hung
one costs.

    python -m bench.postprocess [--finals 400] [--out FILE]

In one process, sttd's own ``transport.postprocess.PostProcessor`` drives the test program
``tests/postprocess/program.py`` (Python 3, number words → digits, KGS's protocol) with real
finals: the words of the JFK clip as the mock backend times them. Measured, per final, from
the call to the rewritten final (queueing included): one caller at a time; 8 concurrent
callers on 1 and on 2 programs; and 8 concurrent callers on a program that never answers
(``hang``, timeout 0.5 s), where every final must come back unprocessed within the timeout.
The programs and this process share the machine's 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from backends.base import Word
from bench.load import dist
from observability.metrics import Metrics
from session.events import Final, FinalReason
from transport.postprocess import PostProcessor

PROGRAM = Path(__file__).resolve().parent.parent / "tests" / "postprocess" / "program.py"
TEXT = "and so my fellow americans ask not what your country can do for you ask what you can do"


def final(seq: int) -> Final:
    words = tuple(Word(w, i * 300, i * 300 + 250, 0.9) for i, w in enumerate(TEXT.split()))
    return Final(seq, TEXT, 0, words[-1].end_ms, FinalReason.ENDPOINT, words=words,
                 confidence=0.9)


async def measure(mode: str, finals: int, callers: int, processes: int,
                  timeout_s: float) -> dict:
    post = PostProcessor(f"{sys.executable} {PROGRAM} {mode}", timeout_s=timeout_s,
                         processes=processes, metrics=Metrics())
    await post.rewrite(final(0))  # start the programs before timing
    times: list[float] = []
    failed = 0

    async def caller(k: int) -> None:
        nonlocal failed
        for n in range(k, finals, callers):
            t = time.perf_counter()
            _, why = await post.rewrite(final(n + 1))
            times.append((time.perf_counter() - t) * 1000)
            failed += why is not None

    t0 = time.perf_counter()
    await asyncio.gather(*(caller(k) for k in range(callers)))
    wall = time.perf_counter() - t0
    post.close()
    return {"mode": mode, "callers": callers, "processes": processes, "finals": finals,
            "failed": failed, "ms": dist(times), "finals_per_s": round(finals / wall, 1)}


async def run(finals: int) -> list[dict]:
    return [await measure("digits", finals, 1, 1, 2.0),
            await measure("digits", finals, 8, 1, 2.0),
            await measure("digits", finals, 8, 2, 2.0),
            await measure("hang", 16, 8, 1, 0.5)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.postprocess", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--finals", type=int, default=400)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    report = {"rows": asyncio.run(run(args.finals))}
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
