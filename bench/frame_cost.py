"""Server CPU per audio frame for a fixed unpaced workload (``--clients`` × 30 s of 20 ms
frames, mock backend, energy VAD). CPU seconds of the server process are less sensitive than
latency percentiles to whatever else shares the machine's cores, so this is the A/B for the
per-frame path:

    python -m bench.frame_cost                                  # this checkout
    python -m bench.frame_cost --baseline /tmp/sttd-before      # a worktree of another commit
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import psutil

from bench.lossless import Server, fixture_mix, stream


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="serve this checkout instead")
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args(argv)
    if args.baseline:
        Server.checkout = args.baseline.resolve()
    pcm = fixture_mix(30)
    with Server(STT_BACKEND="mock", STT_VAD="energy", STT_MAX_SESSIONS="3000") as server:
        proc = psutil.Process(server.proc.pid)

        async def many(n: int) -> list[dict]:
            return await asyncio.gather(*(stream(server.ws, pcm, frame_ms=20, speed=0)
                                          for _ in range(n)))

        asyncio.run(many(8))  # warm-up
        before = proc.cpu_times()
        asyncio.run(many(args.clients))
        after = proc.cpu_times()
    cpu = (after.user + after.system) - (before.user + before.system)
    frames = args.clients * len(pcm) // 640
    print(json.dumps({"server": str(Server.checkout), "frames": frames,
                      "server_cpu_s": round(cpu, 2),
                      "us_per_frame": round(cpu / frames * 1e6, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
