"""Settled words in partials: are they ever changed, how soon do they settle, what they cost.

Streams the eval clips of ``../shared/eval`` through a session's recognizer in this process
(VAD, endpointer, backend stream and text stage as the server builds them; 100 ms chunks, a
partial checked after each), so positions are in audio time and the run is repeatable. For
each final it compares every earlier partial's settled words (``Partial.stable_text``, what
clients see) with the final's first words, and measures:

- ``changed``: settled words the final does not begin with (case and punctuation aside; the
  promise: must be 0);
- ``revised``: settled words the backend's own final decode contradicted (kept all the same:
  the cost of the promise, which also shows as WER against the ``off`` mode);
- ``settle delay``: from the end of a word in the audio (the final's word times) to the audio
  position at which a partial first showed it settled, p50/p95; ``shown delay``: the same for
  its first appearance in any partial. Add ``partial decode`` (the wall time of the partial
  that showed it) for the delay a real-time client sees;
- WER of the finals (English clips, Whisper's normaliser) per mode.

Whisper modes (``backends.whisper.WhisperOptions``): ``off`` (no word settles: the finals as
before this feature), and the settle rules to compare. Kaldi (the Korean model, when the
``kaldi`` extra is installed) on the Korean clips. Usage:

    python -m bench.stability [--limit N] [--modes off,default] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from backends.stable import normalise
from bench.wer import NATURAL, load_manifest, reference, wer
from client.stream import read_pcm16k
from config import REPO_ROOT, Settings
from session.events import Final, FinalReason, Partial
from session.options import RecognitionOptions
from session.recognizer import SegmentRecognizer
from transport.recognition import RecognitionSetup

WHISPER_MODES = {
    "off": {"settle_agree": 0},
    "agree2": {"settle_agree": 2, "settle_hold_back": 1, "settle_margin_s": 0.0},
    "agree3": {"settle_agree": 3, "settle_hold_back": 1, "settle_margin_s": 0.0},
    "margin1.0": {"settle_margin_s": 1.0},
    "margin1.5": {"settle_margin_s": 1.5},
    "agree3-margin1.0": {"settle_agree": 3, "settle_margin_s": 1.0},
    "default": {},  # WhisperOptions' own: agreement, and words well before the audio's end
}
CHUNK = 1600  # 100 ms


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    return round(float(np.percentile(values, p)), 1)


def stream_clip(backend, settings: Settings, pcm: np.ndarray, language: str) -> dict:
    options = RecognitionOptions(language=language)
    setup = RecognitionSetup(SimpleNamespace(settings=settings, backend=backend))
    costs: list[float] = []
    stream = setup.open_stream(options)
    recognizer = SegmentRecognizer(
        stream, setup.recognizer_config(options), vad=setup.voice_detector(options),
        setup=setup, options=options,
        on_inference=lambda kind, s: costs.append(s) if kind == "partial" else None)
    events: list[tuple[int, object, float]] = []  # (audio ms, event, partial decode s)
    pcm = np.concatenate([pcm, np.zeros(16000, dtype=np.int16)])  # the last endpoint fires
    for i in range(0, pcm.size, CHUNK):
        got = recognizer.feed(pcm[i:i + CHUNK], 0.0)
        n = len(costs)
        got += recognizer.maybe_partial()
        cost = costs[-1] if len(costs) > n else 0.0
        position = recognizer.processed_samples * 1000 // 16000
        events += [(position, e, cost) for e in got]
    events += [(recognizer.processed_samples * 1000 // 16000, e, 0.0)
               for e in recognizer.commit(0.0, FinalReason.EOS)]
    revised = getattr(stream, "revised", 0)
    recognizer.close()
    return {"events": events, "revised": revised}


def score_clip(run: dict) -> dict:
    finals = {e.segment_seq: e for _, e, _ in run["events"] if isinstance(e, Final)}
    settled_at: dict[tuple[int, int], tuple[int, float]] = {}
    shown_at: dict[tuple[int, int], int] = {}
    changed = 0
    checked = 0
    for position, e, cost in run["events"]:
        if not isinstance(e, Partial):
            continue
        final_words = [normalise(w) for w in finals[e.segment_seq].text.split()]
        settled = [normalise(w) for w in e.stable_text.split()]
        checked += len(settled)
        changed += sum(1 for i, w in enumerate(settled)
                       if i >= len(final_words) or final_words[i] != w)
        for i, _ in enumerate(settled):
            settled_at.setdefault((e.segment_seq, i), (position, cost))
        for i, _ in enumerate(e.text.split()):
            shown_at.setdefault((e.segment_seq, i), position)
    settle, shown, decode = [], [], []
    words = 0
    for seq, final in finals.items():
        timed = final.words if len(final.words) == len(final.text.split()) else ()
        words += len(final.text.split())
        for i, w in enumerate(timed):
            if (seq, i) in settled_at:
                position, cost = settled_at[(seq, i)]
                settle.append(position - w.end_ms)
                decode.append(cost * 1000)
            if (seq, i) in shown_at:
                shown.append(shown_at[(seq, i)] - w.end_ms)
    return {"text": " ".join(f.text for f in finals.values() if f.text), "changed": changed,
            "settled_checked": checked, "revised": run["revised"], "words": words,
            "settled_words": len({k for k in settled_at}), "settle_ms": settle,
            "shown_ms": shown, "decode_ms": decode}


def summarise(rows: list[dict], pairs: list[tuple[str, str]] | None) -> dict:
    settle = [v for r in rows for v in r["settle_ms"]]
    shown = [v for r in rows for v in r["shown_ms"]]
    decode = [v for r in rows for v in r["decode_ms"]]
    return {
        "clips": len(rows), "final_words": sum(r["words"] for r in rows),
        "settled_words": sum(r["settled_words"] for r in rows),
        "settled_shown_in_partials": sum(r["settled_checked"] for r in rows),
        "changed": sum(r["changed"] for r in rows), "revised": sum(r["revised"] for r in rows),
        "settle_delay_ms_p50": pct(settle, 50), "settle_delay_ms_p95": pct(settle, 95),
        "shown_delay_ms_p50": pct(shown, 50), "shown_delay_ms_p95": pct(shown, 95),
        "partial_decode_ms_p50": pct(decode, 50),
        "wer": None if pairs is None else round(wer(pairs) * 100, 2),
    }


def run_whisper(clips: list[dict], audio_dir: Path, modes: list[str]) -> dict:
    from backends.registry import create_backend

    out = {}
    for mode in modes:
        settings = Settings(backend="whisper", whisper_cpu_threads=2, inference_threads=1)
        backend = create_backend(settings)
        backend._opts = replace(backend._opts, **WHISPER_MODES[mode])
        backend.load()
        t0 = time.monotonic()
        rows = [score_clip(stream_clip(backend, settings, np.frombuffer(
            read_pcm16k(audio_dir / c["audio"]), "<i2"), "en")) for c in clips]
        backend.close()
        pairs = [(reference(c), r["text"]) for c, r in zip(clips, rows, strict=True)]
        out[mode] = {**summarise(rows, pairs), "seconds": round(time.monotonic() - t0, 1)}
        print(mode, json.dumps(out[mode]), flush=True)
    return out


def run_kaldi(clips: list[dict], audio_dir: Path) -> dict | None:
    try:
        from backends.registry import create_backend
        settings = Settings(backend="kaldi", inference_threads=1)
        backend = create_backend(settings)
        backend.load()
    except Exception as exc:  # the kaldi extra is optional
        print("kaldi: skipped:", exc)
        return None
    rows = [score_clip(stream_clip(backend, settings, np.frombuffer(
        read_pcm16k(audio_dir / c["audio"]), "<i2"), "ko")) for c in clips]
    backend.close()
    result = summarise(rows, None)
    print("kaldi", json.dumps(result), flush=True)
    return result


def table(report: dict) -> str:
    head = (f"{'mode':<20}{'WER %':>7}{'settled':>9}{'changed':>9}{'revised':>9}"
            f"{'settle p50/p95 ms':>19}{'shown p50 ms':>14}{'decode p50 ms':>15}")
    lines = [head]
    rows = [(m, r) for m, r in report["whisper"].items()]
    if report.get("kaldi"):
        rows.append(("kaldi (ko)", report["kaldi"]))
    for mode, r in rows:
        wer_cell = "-" if r["wer"] is None else f"{r['wer']:.2f}"
        settle = f"{r['settle_delay_ms_p50']} / {r['settle_delay_ms_p95']}"
        lines.append(
            f"{mode:<20}{wer_cell:>7}{r['settled_words']:>9}{r['changed']:>9}"
            f"{r['revised']:>9}{settle:>19}"
            f"{str(r['shown_delay_ms_p50']):>14}{str(r['partial_decode_ms_p50']):>15}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.stability", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--audio-dir", type=Path, default=REPO_ROOT.parent / "shared" / "eval")
    p.add_argument("--modes", default=",".join(WHISPER_MODES))
    p.add_argument("--limit", type=int, default=0, help="English clips (0: all)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    manifest = load_manifest(args.audio_dir)
    english = [c for c in manifest if c["language"] == "en" and c["kind"] in NATURAL
               and c["kind"] != "long-form"]
    if args.limit:
        english = english[:args.limit]
    korean = [c for c in manifest if c["language"] == "ko"]
    report = {"english_clips": len(english), "korean_clips": len(korean),
              "whisper": run_whisper(english, args.audio_dir, args.modes.split(",")),
              "kaldi": run_kaldi(korean, args.audio_dir)}
    print(table(report))
    if args.out:
        from bench.plots import write_report

        write_report(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
