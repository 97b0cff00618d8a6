"""What HAProxy costs: the same load direct to 3 replicas and through the balancer, one run.

Starts three ``sttd serve`` replicas (mock backend, energy VAD, each its own HTTP and agent
port) and Debian's HAProxy on the shipped ``deploy/haproxy/haproxy.cfg`` (addresses from the
environment, as ``tests/test_haproxy.py`` runs it), all on loopback. At every rung the same
load runs ``--reps`` times in each mode, interleaved direct, balanced, balanced, direct
(ABBA: a linear drift of the box cancels out of the difference):

* ``direct``: client i connects to replica i mod 3 (an even spread, as leastconn makes);
* ``balanced``: every client connects to HAProxy's port.

The clients, their clips and their schedule are ``bench.load``'s (real-time paced
``/v1/stt/ws`` streams; final latency = final received − the frame holding the sample the
endpointer needed, see its docstring), seeded per rung so both modes play the same clips.

    python -m bench.balancer --concurrency 48,96,192 --duration 20 \\
        --out bench/results/balancer.json

Per mode and rung: final latency p50/p95/p99 (client), partial lag p95, finals, errors,
drops; balanced − direct at p50/p95/p99 (pooled over the repetitions, and per ABBA pair);
HAProxy's CPU (psutil ``cpu_times`` of its process) over the full-concurrency window, in % of
one core, per stream and as CPU-ms per stream-second, and over the whole run (handshakes and
closes included) per session; the replicas' and the load generator's CPU. In the direct
runs HAProxy only runs its health and agent checks: that is its idle baseline. The load
generator, HAProxy and the replicas share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import websockets

from bench import load
from bench.load import ClientConfig, ProcGroup, Runner, dist

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = REPO_ROOT / "deploy" / "haproxy" / "haproxy.cfg"
HAPROXY = shutil.which("haproxy") or (
    "/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
STTD = Path(sys.executable).parent / "sttd"
MODES = ("direct", "balanced")
WS_PATH = "/v1/stt/ws"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not in {timeout:g} s: {what}")
        time.sleep(0.1)


class Replica:
    """One ``sttd serve`` process (one worker) with the mock backend."""

    def __init__(self, name: str, workdir: Path, max_sessions: int) -> None:
        self.name = name
        self.port, self.agent_port = free_port(), free_port()
        env = {"STT_BACKEND": "mock", "STT_VAD": "energy", "STT_LOG_LEVEL": "warning",
               "STT_MAX_SESSIONS": str(max_sessions), "STT_AGENT_PORT": str(self.agent_port),
               "STT_IDLE_TIMEOUT_SEC": "120", "STT_MAX_PENDING_CONNECTIONS_PER_IP": "4096",
               "STT_MAX_PENDING_CONNECTIONS": "4096", "PATH": "/usr/bin:/bin"}
        self.log = (workdir / f"{name}.log").open("w")
        self.proc = subprocess.Popen([str(STTD), "serve", "--port", str(self.port)],
                                     cwd=REPO_ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{WS_PATH}"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ready", timeout=2) as r:
                return json.loads(r.read()).get("status") == "ready"
        except (OSError, ValueError):
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def haproxy_env(port: int, stats_socket: Path, replicas: list[tuple[int, int]]) -> dict:
    """The environment the shipped haproxy.cfg reads its addresses from: HAProxy on
    ``port``, replicas' (HTTP port, agent port) on loopback."""
    env = {"PATH": "/usr/sbin:/usr/bin:/bin", "STTD_LISTEN": f"127.0.0.1:{port}",
           "STTD_STATS_SOCKET": str(stats_socket)}
    for i, (http_port, agent_port) in enumerate(replicas, 1):
        env[f"STTD_R{i}"] = f"127.0.0.1:{http_port}"
        env[f"STTD_R{i}_AGENT"] = str(agent_port)
    return env


class Balancer:
    """HAProxy in the foreground (``-db``) on the shipped config, unedited."""

    def __init__(self, workdir: Path, replicas: list[Replica]) -> None:
        self.port = free_port()
        self.socket = workdir / "haproxy.sock"
        env = haproxy_env(self.port, self.socket, [(r.port, r.agent_port) for r in replicas])
        self.log_path = workdir / "haproxy.log"
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen([HAPROXY, "-f", str(CONFIG), "-db"], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{WS_PATH}"

    def stat(self) -> dict[str, dict[str, str]]:
        """``show stat`` of the sttd backend, by server name (and BACKEND)."""
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(str(self.socket))
                s.sendall(b"show stat\n")
                text = s.makefile().read()
        except OSError:
            return {}
        rows = csv.DictReader(line.removeprefix("# ") for line in text.splitlines() if line)
        return {r["svname"]: r for r in rows if r["pxname"] == "sttd"}

    def servers(self) -> dict[str, tuple[str, int]]:
        return {k: (r["status"], int(r["weight"] or 0)) for k, r in self.stat().items()
                if k.startswith("r")}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def haproxy_version() -> str:
    out = subprocess.run([HAPROXY, "-v"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else "?"


def counters(lb: Balancer) -> dict[str, int]:
    """Cumulative HAProxy counters: sessions per replica, retries, errors."""
    st = lb.stat()
    out = {f"stot_{k}": int(r["stot"] or 0) for k, r in st.items() if k.startswith("r")}
    be = st.get("BACKEND", {})
    for key in ("wretr", "wredis", "econ", "eresp", "hrsp_5xx", "cli_abrt", "srv_abrt"):
        out[key] = int(be.get(key) or 0)
    return out


def cpu_s(group: ProcGroup) -> float:
    return group.sample()[1]


def _r(v: float | None, digits: int = 2) -> float | None:
    return None if v is None else round(v, digits)


def _diff(a: dict, b: dict, q: str) -> float | None:
    return _r(b[q] - a[q]) if a.get(q) is not None and b.get(q) is not None else None


def mode_summary(n: int, runs: list[dict[str, Any]], raws: list[dict[str, list]]) -> dict:
    """Pooled over the repetitions of one mode at one rung."""
    fin = dist([x for r in raws for x in r["final_ms"]])
    plag = dist([x for r in raws for x in r["partial_lag_ms"]])
    hap = [r["haproxy"] for r in runs]
    hap_pct = [h["window_cpu_pct"] for h in hap if h["window_cpu_pct"] is not None]
    srv = [(r.get("server") or {}).get("cpu_pct") for r in runs]
    lg = [r["loadgen"]["cpu_pct"] for r in runs]
    mean = (lambda xs: sum(xs) / len(xs) if xs else None)  # noqa: E731
    h_pct = mean(hap_pct)
    sessions = sum(r["counts"]["sessions"] for r in runs)
    return {
        "clients": n, "runs": len(runs),
        "finals": sum(r["counts"]["finals"] for r in runs),
        "finals_endpoint": sum(r["counts"]["finals_endpoint"] for r in runs),
        "final_ms": fin, "partial_lag_ms": plag,
        "final_ms_per_run": [r["final_ms"] for r in runs],
        "errors": sum(r["errors"] for r in runs), "refused": sum(r["refused"] for r in runs),
        "drop_warnings": sum(r["counts"]["warnings"] for r in runs),
        "dropped_ms": sum(r["counts"]["dropped_ms"] for r in runs),
        "realtime_factor": [r["realtime_factor"] for r in runs],
        "haproxy_cpu_pct": _r(h_pct),
        "haproxy_cpu_pct_per_stream": _r(h_pct / n, 4) if h_pct is not None else None,
        # % of a core / 100 × 1000 ms, per stream: CPU-ms per stream-second
        "haproxy_cpu_ms_per_stream_s": _r(h_pct * 10 / n, 4) if h_pct is not None else None,
        "haproxy_cpu_ms_per_session_whole_run": _r(
            sum(h["run_cpu_s"] for h in hap) * 1000 / sessions, 3) if sessions else None,
        "replicas_cpu_pct": _r(mean([x for x in srv if x is not None]), 1),
        "replicas_cpu_ms_per_stream_s": _r(mean([x for x in srv if x is not None]) * 10 / n, 3)
        if any(x is not None for x in srv) else None,
        "loadgen_cpu_pct": _r(mean([x for x in lg if x is not None]), 1),
        "loadgen_loop_lag_p99_ms": max(r["loadgen"]["loop_lag_ms"].get("p99", 0) for r in runs),
        "spread": [r["haproxy"].get("spread") for r in runs],
        "haproxy_counters": [r["haproxy"]["counters"] for r in runs],
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="sttd-balancer-"))
    print(f"logs: {workdir}", file=sys.stderr)
    limit = max(args.concurrency) + 8
    replicas = [Replica(f"r{i}", workdir, limit) for i in (1, 2, 3)]
    lb = Balancer(workdir, replicas)
    try:
        await asyncio.to_thread(wait_for, lambda: all(r.ready() for r in replicas), 60,
                                "replicas ready")
        if lb.proc.poll() is not None:
            raise RuntimeError(f"haproxy exited: {lb.log_path.read_text()}")
        await asyncio.to_thread(wait_for, lambda: list(lb.servers().values()) ==
                                [("UP", 100)] * 3, 20, "HAProxy sees 3 replicas UP")
        return await ramp(args, replicas, lb)
    finally:
        lb.stop()
        for r in replicas:
            r.stop()


async def ramp(args: argparse.Namespace, replicas: list[Replica], lb: Balancer) -> dict:
    playlist = load.load_playlist(args.audio_dir, load._csv_set(args.kinds),
                                  load._csv_set(args.languages), load._csv_set(args.ids),
                                  args.frame_ms, args.gap_ms)
    print(f"{len(playlist.clip_ids)} clips, {playlist.audio_s:.0f} s of audio",
          file=sys.stderr)
    ring = (300 // load.VAD_FRAME_MS * load.VAD_FRAME_MS
            + load._ceil_to(60, load.VAD_FRAME_MS))  # the server defaults (preroll, start)

    def cfg(urls: tuple[str, ...]) -> ClientConfig:
        return ClientConfig(url=urls[0], urls=urls, frame_ms=args.frame_ms, speed=1.0,
                            duration=args.duration, vad_silence_ms=500, ring_ms=ring,
                            open_timeout=30.0, drain_timeout=30.0, query="")

    runners = {"direct": Runner(args, cfg(tuple(r.url for r in replicas)), playlist),
               "balanced": Runner(args, cfg((lb.url,)), playlist)}
    group = ProcGroup([psutil.Process(r.proc.pid) for r in replicas])
    hap = ProcGroup([psutil.Process(lb.proc.pid)])
    order = ["direct", "balanced", "balanced", "direct"] * ((args.reps + 1) // 2)
    order = order[:2 * args.reps]
    rungs = []
    print(f"{'mode':>8} " + load.table_header() + "   hCPU%", flush=True)
    k = 0
    for idx, n in enumerate(args.concurrency):
        runs: dict[str, list[dict]] = {m: [] for m in MODES}
        raws: dict[str, list[dict]] = {m: [] for m in MODES}
        for mode in order:
            if k:
                await asyncio.sleep(args.settle)
                await asyncio.to_thread(
                    wait_for, lambda: list(lb.servers().values()) == [("UP", 100)] * 3, 20,
                    "replicas back to full weight")
            runner = runners[mode]
            runner.rng.seed(f"{args.seed}/{idx}")  # both modes play the same clips
            before, c0 = cpu_s(hap), counters(lb)
            r = await runner.rung(k, n, group, {"haproxy": hap})
            after, c1 = cpu_s(hap), counters(lb)
            k += 1
            h = (r.pop("others") or {}).get("haproxy") or {}
            delta = {key: c1[key] - c0.get(key, 0) for key in c1}
            r["haproxy"] = {
                "window_cpu_pct": h.get("cpu_pct"), "rss_max_mb": h.get("rss_max_mb"),
                "run_cpu_s": round(after - before, 3), "counters": delta,
                "spread": [delta.get(f"stot_r{i}", 0) for i in (1, 2, 3)],
            }
            r["mode"] = mode
            raws[mode].append(r.pop("raw"))
            runs[mode].append(r)
            print(f"{mode:>8} " + load.table_row(r)
                  + f" {load._fmt(h.get('cpu_pct'), 1):>7}", flush=True)
            if r["loadgen"]["loop_lag_ms"].get("p99", 0) > 50:
                print("  warning: load generator event loop lagging; latencies inflated",
                      flush=True)
        modes = {m: mode_summary(n, runs[m], raws[m]) for m in MODES}
        d, b = modes["direct"], modes["balanced"]
        added = {q: _diff(d["final_ms"], b["final_ms"], q) for q in ("p50", "p95", "p99")}
        pairs = [{q: _diff(dr["final_ms"], br["final_ms"], q) for q in ("p50", "p95")}
                 for dr, br in zip(runs["direct"], runs["balanced"], strict=True)]
        net = (b["haproxy_cpu_pct"] - d["haproxy_cpu_pct"]
               if b["haproxy_cpu_pct"] is not None and d["haproxy_cpu_pct"] is not None
               else None)
        rung = {"clients": n, "modes": modes,
                "added_final_ms": added, "added_final_ms_per_pair": pairs,
                "added_partial_lag_p95_ms": _diff(d["partial_lag_ms"], b["partial_lag_ms"],
                                                  "p95"),
                "haproxy_net_cpu_pct": _r(net),
                "haproxy_net_cpu_ms_per_stream_s": _r(net * 10 / n, 4)
                if net is not None else None,
                # whole runs (handshakes, closes, checks) minus the direct runs' checks
                "haproxy_net_cpu_ms_per_session": _r(
                    (sum(x["haproxy"]["run_cpu_s"] for x in runs["balanced"])
                     - sum(x["haproxy"]["run_cpu_s"] for x in runs["direct"])) * 1000
                    / max(1, sum(x["counts"]["sessions"] for x in runs["balanced"])), 3),
                "runs": [*runs["direct"], *runs["balanced"]]}
        if args.raw:
            rung["raw"] = raws
        rungs.append(rung)
        print(f"  {n} clients: added final latency p50 {added['p50']} / p95 {added['p95']} / "
              f"p99 {added['p99']} ms (pairs {pairs}); HAProxy {b['haproxy_cpu_pct']} % "
              f"balanced vs {d['haproxy_cpu_pct']} % direct (checks only): "
              f"{b['haproxy_cpu_ms_per_stream_s']} CPU-ms per stream-second", flush=True)
    return {"rungs": rungs,
            "replica_pids": [r.proc.pid for r in replicas], "haproxy_pid": lb.proc.pid,
            "clips": playlist.clip_ids}


def summary_table(report: dict) -> str:
    head = ("| streams | mode | finals | final p50 / p95 / p99 (ms) | added p50 / p95 (ms) | "
            "plag p95 | err / drops | HAProxy CPU % | HAProxy CPU-ms per stream-s | "
            "replicas CPU % | lg CPU % |")
    lines = [head, "|" + "---|" * 11]
    for rung in report["rungs"]:
        for m in MODES:
            s = rung["modes"][m]
            f = s["final_ms"]
            add = rung["added_final_ms"]
            lines.append(
                f"| {rung['clients']} | {m} | {s['finals_endpoint']} | "
                f"{f.get('p50')} / {f.get('p95')} / {f.get('p99')} | "
                + (f"{add['p50']} / {add['p95']}" if m == "balanced" else "")
                + f" | {s['partial_lag_ms'].get('p95')} | {s['errors']} / "
                f"{s['drop_warnings']} | {s['haproxy_cpu_pct']} | "
                f"{s['haproxy_cpu_ms_per_stream_s']} | {s['replicas_cpu_pct']} | "
                f"{s['loadgen_cpu_pct']} |")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> Path | None:
    from bench import plots

    try:
        plt = plots._pyplot()
    except plots.MissingMatplotlib:
        print(f"no plot: {plots.INSTALL_HINT}", file=sys.stderr)
        return None
    rungs = report["rungs"]
    xs = [r["clients"] for r in rungs]
    fig, (ax_l, ax_c) = plt.subplots(1, 2, figsize=(9, 4.2))
    for m, color in zip(MODES, plots.COLORS, strict=False):
        for q, style in (("p50", "-o"), ("p95", "--^")):
            ax_l.plot(xs, [r["modes"][m]["final_ms"].get(q) for r in rungs], style,
                      color=color, label=f"{m} {q}")
        ax_c.plot(xs, [r["modes"][m]["haproxy_cpu_pct"] for r in rungs], "-o", color=color,
                  label=f"HAProxy, {m}" + (" (checks only)" if m == "direct" else ""))
    ax_c.plot(xs, [r["modes"]["balanced"]["replicas_cpu_pct"] for r in rungs], ":.",
              color="#777777", label="3 replicas, balanced")
    ax_l.set_title("Final after end of speech (client)")
    ax_l.set_ylabel("ms")
    ax_c.set_title("CPU")
    ax_c.set_ylabel("% of one core")
    for ax in (ax_l, ax_c):
        plots._streams_axis(ax, xs)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.2)
        ax.legend(loc="best")
    fig.suptitle(f"bench.balancer: direct vs through HAProxy "
                 f"{report['haproxy_version'].split(' ')[2].split('-')[0]}"
                 f" ({str(report['started_at'])[:10]})", fontsize=10)
    return plots._save(fig, path, "2-core box: load generator, HAProxy and the 3 replicas "
                                  "share the cores")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.balancer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", default="48,96,192", help="comma list of rungs")
    p.add_argument("--duration", type=float, default=20.0, help="seconds streamed per client")
    p.add_argument("--reps", type=int, default=2,
                   help="runs per mode per rung (order direct, balanced, balanced, direct, …)")
    p.add_argument("--audio-dir", type=Path, default=REPO_ROOT.parent / "shared" / "eval")
    p.add_argument("--kinds", default=load.DEFAULT_KINDS)
    p.add_argument("--languages", default="en")
    p.add_argument("--ids", default="", help="comma list of clip ids (overrides kinds/langs)")
    p.add_argument("--gap-ms", type=int, default=1000)
    p.add_argument("--frame-ms", type=int, choices=(20, 100), default=100)
    p.add_argument("--stagger", type=float, default=1.0)
    p.add_argument("--settle", type=float, default=2.0, help="pause between runs (s)")
    p.add_argument("--sample-interval", type=float, default=0.5)
    p.add_argument("--slo-final-ms", type=float, default=100.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--raw", action="store_true", help="keep the raw latency lists in the JSON")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON (default bench/results/balancer-<timestamp>.json), plot next to it")
    args = p.parse_args(argv)
    try:
        args.concurrency = [int(x) for x in str(args.concurrency).split(",") if x.strip()]
    except ValueError:
        p.error("--concurrency: expected a comma list of integers")
    if not args.concurrency or min(args.concurrency) < 1 or args.reps < 1:
        p.error("--concurrency needs positive integers, --reps >= 1")
    args.speed, args.procs = 1.0, 1  # what bench.load's Runner reads
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if HAPROXY is None:
        print("haproxy is not installed (Debian: apt-get install haproxy)", file=sys.stderr)
        return 2
    keep_raw, args.raw = args.raw, True  # the Runner keeps raw lists; pooled here
    load._raise_nofile()
    started = datetime.now()
    try:
        import uvloop
        body = uvloop.run(run(args))
        loop_name = "uvloop"
    except ImportError:
        body = asyncio.run(run(args))
        loop_name = "asyncio"
    args.raw = keep_raw
    report = {
        "tool": "bench.balancer",
        "started_at": started.isoformat(timespec="seconds"),
        "command": "python -m bench.balancer " + " ".join(sys.argv[1:] if argv is None
                                                          else argv),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "haproxy_version": haproxy_version(),
        "haproxy_config": str(CONFIG.relative_to(REPO_ROOT)),
        "backend": "mock (STT_VAD=energy), 3 × sttd serve (1 process each)",
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                 "websockets": websockets.__version__, "loop": loop_name,
                 "note": f"load generator, HAProxy and the 3 replicas share the "
                         f"{os.cpu_count()} cores"},
        **body,
    }
    if not keep_raw:
        for rung in report["rungs"]:
            rung.pop("raw", None)
    report["table"] = summary_table(report)
    out = args.out or REPO_ROOT / "bench" / "results" / f"balancer-{started:%Y%m%d-%H%M%S}.json"
    from bench.plots import write_report

    write_report(report, out)
    png = plot(report, out.with_suffix(".png"))
    print(report["table"])
    print(f"results: {out}" + (f", plot: {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
