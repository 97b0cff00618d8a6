"""Soak: N real-time streams for T minutes while the server's RSS, open file descriptors and
threads are sampled; reports whether memory stays flat after warm-up.

Runs ``bench.load`` (one rung of ``--streams`` clients for ``--minutes``) against a running
server and samples the server process (found by its listening port, or ``--server-pid``)
every ``--interval`` seconds. Usage:

    python -m bench.soak --url ws://127.0.0.1:8011/v1/stt/ws --streams 384 --minutes 30
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import psutil

from config import REPO_ROOT


def find_server(port: int) -> psutil.Process:
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            return psutil.Process(conn.pid)
    raise SystemExit(f"no process listens on port {port}: pass --server-pid")


def sample(proc: psutil.Process, started: float) -> dict:
    with proc.oneshot():
        return {"t_s": round(time.monotonic() - started, 1),
                "rss_mb": round(proc.memory_info().rss / 2**20, 1),
                "fds": proc.num_fds(), "threads": proc.num_threads(),
                "cpu_s": round(sum(proc.cpu_times()[:2]), 1)}


def summarise(samples: list[dict], warmup_s: float) -> dict:
    steady = [s for s in samples if s["t_s"] >= warmup_s]
    if not steady:
        return {}
    rss = [s["rss_mb"] for s in steady]
    base = rss[0]
    return {
        "warmup_s": warmup_s,
        "rss_mb_after_warmup_first_min_max_last": [base, min(rss), max(rss), rss[-1]],
        "rss_drift_pct_max": round(max(abs(r - base) for r in rss) / base * 100, 2),
        "rss_drift_pct_end": round((rss[-1] - base) / base * 100, 2),
        "fds_min_max": [min(s["fds"] for s in steady), max(s["fds"] for s in steady)],
        "threads_min_max": [min(s["threads"] for s in steady),
                            max(s["threads"] for s in steady)],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    p.add_argument("--url", default="ws://127.0.0.1:8011/v1/stt/ws")
    p.add_argument("--streams", type=int, default=384)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--frame-ms", type=int, default=100)
    p.add_argument("--interval", type=float, default=10.0)
    p.add_argument("--warmup-minutes", type=float, default=5.0)
    p.add_argument("--server-pid", type=int)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "soak.json")
    args = p.parse_args(argv)

    proc = (psutil.Process(args.server_pid) if args.server_pid
            else find_server(urlparse(args.url).port or 80))
    started = time.monotonic()
    load_out = args.out.with_suffix(".load.json")
    load = subprocess.Popen([
        sys.executable, "-m", "bench.load", "--url", args.url,
        "--concurrency", str(args.streams), "--duration", str(args.minutes * 60),
        "--frame-ms", str(args.frame_ms), "--no-stop", "--out", str(load_out),
        "--server-pid", str(proc.pid),
    ])
    samples = [sample(proc, started)]
    while load.poll() is None:
        time.sleep(args.interval)
        samples.append(sample(proc, started))
        print(json.dumps(samples[-1]), flush=True)
    report = {"url": args.url, "streams": args.streams, "minutes": args.minutes,
              "load_exit": load.returncode, "load_report": str(load_out),
              **summarise(samples, args.warmup_minutes * 60), "samples": samples}
    from bench.plots import write_report

    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=1))
    write_report(report, args.out)
    return 0 if load.returncode == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
