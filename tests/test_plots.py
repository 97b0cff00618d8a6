"""bench/plots.py: every figure drawn from small JSON of the shapes the bench scripts write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from matplotlib.image import imread  # noqa: E402

from bench import plots  # noqa: E402


def _dist(p50: float, p95: float) -> dict:
    return {"n": 10, "p50": p50, "p95": p95, "p99": p95 * 1.2, "max": p95 * 1.3, "mean": p50}


def load_report(backend: str = "whisper", scale: float = 1.0) -> dict:
    rungs = []
    for i, n in enumerate((1, 2, 4, 8)):
        rungs.append({
            "clients": n, "final_ms": _dist(180 * scale + 20 * i, 250 * scale + 120 * i),
            "partial_lag_ms": _dist(100 + 10 * i, 150 + 60 * i),
            "server": {"cpu_pct": 40.0 * n ** 0.8, "rss_max_mb": 500.0},
            "loadgen": {"cpu_pct": 2.0 * n, "loop_lag_ms": {"p99": 3.0}},
            "slo_ok": n < 8, "slo_failures": [] if n < 8 else ["p95 final 900 ms > 800 ms"],
        })
    return {"tool": "bench.load", "started_at": "2026-12-02T18:30:00",
            "config": {"duration": 20.0, "frame_ms": 100, "speed": 1.0, "slo_final_ms": 800.0},
            "host": {"cpus": 2}, "ready": {"backend": backend, "model": "tiny.en"},
            "rungs": rungs, "max_clients_within_slo": 4}


WER = {
    "url": "ws://127.0.0.1:8013/v1/stt/ws", "speed": 0.0, "parallel": 1,
    "streamed_wer_natural": 8.03, "streamed_wer_natural_words": 7.15,
    "streamed_wer_by_kind": {"command": 16.67, "conversational": 0.0, "long-form": 9.89,
                             "numbers": 33.3, "read": 6.21},
    "clips_natural": 73, "words_on_silence_and_noise": 0,
    "batch_wer_natural": 8.03, "batch_wer_natural_words": 7.15,
    "offline_wer_natural": 6.79, "offline_wer_natural_words": 6.39,
    "clips": [{"id": "a", "kind": "read", "wer": 5.0, "text": "x"},
              {"id": "b", "kind": "command", "wer": 16.7, "text": "y"}],
}

STABILITY = {
    "english_clips": 70, "korean_clips": 1,
    "whisper": {mode: {"clips": 70, "final_words": 1107, "settled_words": s, "changed": 0,
                       "revised": r, "settle_delay_ms_p50": d50, "settle_delay_ms_p95": d95,
                       "shown_delay_ms_p50": -20.0, "partial_decode_ms_p50": 50.0, "wer": w}
                for mode, s, r, d50, d95, w in (
                    ("off", 0, 0, None, None, 7.14), ("agree2", 908, 39, 760.0, 2040.0, 9.15),
                    ("default", 676, 6, 2240.0, 2780.0, 7.23))},
    "kaldi": {"clips": 1, "settled_words": 7, "settle_delay_ms_p50": 1040.0,
              "settle_delay_ms_p95": 1229.0, "wer": None},
}

LONG_SEGMENTS = {
    "rows": [{"config": c, "max_segment_ms": m, "clips": 8, "ref_words": 996, "cuts": 20,
              "lost": lost, "repeated": 0, "short_finals": 1, "wer_pct": w}
             for c, m, lost, w in (("hard cut", 15000, 25, 9.34), ("hard cut", 20000, 28, 9.54),
                                   ("quiet cut + overlap + reach back", 15000, 4, 7.63),
                                   ("quiet cut + overlap + reach back", 20000, 3, 6.22))],
    "per_clip": {}, "args": {"clips": 8},
}

SOAK = {"url": "ws://127.0.0.1:8011/v1/stt/ws", "streams": 64, "minutes": 2.0,
        "warmup_s": 30.0, "samples": [{"t_s": 10.0 * i, "rss_mb": 150 + i % 3, "fds": 80,
                                       "threads": 12, "cpu_s": 4.0 * i} for i in range(13)]}

PEERS = {"tool": "bench.whisperlive", "when": "2026-12-03 08:00 UTC",
         "calibration": {"decode_1_thread_s": 0.43},
         "slo": {"final_p95_ms": 800.0, "partial_lag_p95_ms": 1000.0},
         "rows": [{"streams": n, "server": name, "final_p95_ms": f * n, "wer": w,
                   "partial_lag_p95_ms": None if n == 8 and name != "sttd" else 100.0 * f * n}
                  for n in (1, 2, 4, 8) for name, f, w in (("sttd", 300, 5.4),
                                                            ("WhisperLive", 3000, 5.6))]}


def assert_drawn(path: Path) -> None:
    """A PNG that exists, is small, and is not one flat colour."""
    assert path.is_file() and path.suffix == ".png"
    assert path.stat().st_size < 200_000
    img = imread(path)[..., :3]
    assert img.shape[0] > 200 and img.shape[1] > 400
    background = img[0, 0]
    differs = (abs(img - background).sum(axis=2) > 0.1).mean()
    assert differs > 0.02, f"{path.name}: only {differs:.1%} of pixels drawn"
    assert len({tuple(px) for px in img.reshape(-1, 3)[::97].round(2)}) > 5


@pytest.mark.parametrize(("report", "names"), [
    (load_report(), ["run-latency.png", "run-cpu.png"]),
    (WER, ["run.png"]),
    (STABILITY, ["run.png"]),
    (LONG_SEGMENTS, ["run.png"]),
    (SOAK, ["run.png"]),
    (PEERS, ["run.png"]),
], ids=["load", "wer", "stability", "long_segments", "soak", "peers"])
def test_save_plots_writes_pngs_next_to_the_json(tmp_path, report, names):
    out = tmp_path / "run.json"
    out.write_text(json.dumps(report))
    paths = plots.save_plots(report, out)
    assert sorted(p.name for p in paths) == sorted(names)
    for p in paths:
        assert p.parent == tmp_path
        assert_drawn(p)


def test_nothing_to_draw_is_no_figure(tmp_path):
    idle = {"tool": "bench.load", "idle": {"sessions_open": 10}}
    assert plots.save_plots(idle, tmp_path / "idle.json") == []
    assert plots.save_plots({"something": "else"}, tmp_path / "x.json") == []
    assert list(tmp_path.iterdir()) == []


def test_missing_data_still_draws(tmp_path):
    report = load_report()
    for r in report["rungs"]:
        r["partial_lag_ms"] = {"n": 0}
        r["server"] = None
    del report["host"]
    for p in plots.save_plots(report, tmp_path / "sparse.json"):
        assert_drawn(p)


def test_cli_redraws_into_an_out_dir_and_overlays_backends(tmp_path, capsys):
    sources = []
    for name, report in (("whisper", load_report()), ("mock", load_report("mock", 0.01)),
                         ("wer", WER)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(report))
        sources.append(str(path))
    out_dir = tmp_path / "img"
    assert plots.main([*sources, "--out-dir", str(out_dir)]) == 0
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "mock-cpu.png", "mock-latency.png", "wer.png", "whisper-cpu.png", "whisper-latency.png"]
    assert plots.main([*sources, "--out-dir", str(out_dir / "both"), "--overlay", "load"]) == 0
    assert sorted(p.name for p in (out_dir / "both").iterdir()) == [
        "load-cpu.png", "load-latency.png", "wer.png"]
    for p in out_dir.rglob("*.png"):
        assert_drawn(p)
    assert "load-latency.png" in capsys.readouterr().out


def test_a_missing_matplotlib_is_reported_not_raised(tmp_path, monkeypatch, capsys):
    def missing():
        raise plots.MissingMatplotlib(plots.INSTALL_HINT)

    monkeypatch.setattr(plots, "_pyplot", missing)
    assert plots.save_plots(WER, tmp_path / "wer.json") == []
    assert "pip install -e '.[bench]'" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="matplotlib is not installed"):
        (tmp_path / "wer.json").write_text(json.dumps(WER))
        plots.main([str(tmp_path / "wer.json")])
