"""Numbers as digits on the eval clips: word error rate before and after ``numerals=true``.

Transcribes the English clips of ``../shared/eval`` in this process with the embedded Whisper
backend (each clip whole, as one final with its words), rewrites every final with
``session.numerals`` and scores both texts:

- ``numbers`` clips against references written in digits, as a person would write them;
- the same references against the clips' spelled ones, as given and rewritten (no model: what
  the rewrite makes of spelled digits, since Whisper writes most numbers as digits itself);
- every other English clip against its reference, with bench.wer's normaliser (Whisper's
  English normaliser: it turns spelled numbers into digits itself, so this shows only that the
  rewrite breaks no words) and with the number-neutral one.

The number-neutral normaliser lowercases, keeps words and numbers ("3.5", "21st", "that's")
and drops the rest of the punctuation, commas between digits included ("1,0001" → "10001");
it never spells or converts a number, so before and after are scored alike. Usage:

    python -m bench.numerals [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import jiwer
import numpy as np

from bench.wer import load_manifest, reference, wer
from client.stream import read_pcm16k
from config import REPO_ROOT, Settings
from session.numerals import Numerals
from session.text import Text

DIGIT_REFERENCES = {
    "s4_digits_10001_90210_01803": "10001 90210 01803",  # three ZIP codes, as in the clip's id
    "sr_english_one_two_three": "1 2 3",
}
_TOKEN = re.compile(r"[^\W_]+(?:[.,'][^\W_]+)*")


def neutral(text: str) -> str:
    return " ".join(re.sub(r"(?<=\d),(?=\d)", "", t) for t in _TOKEN.findall(text.lower()))


def neutral_wer(pairs: list[tuple[str, str]]) -> float:
    pairs = [(neutral(r), neutral(h)) for r, h in pairs if neutral(r)]
    return jiwer.wer([r for r, _ in pairs], [h for _, h in pairs])


def spells(text: Text) -> bool:
    """The words, put together, are the text (a backend may split a token: "105", "%")."""
    return not text.words or "".join(w.word.strip() for w in text.words) == "".join(
        text.text.split())


def transcribe(clips: list[dict], audio_dir: Path, threads: int) -> dict[str, Text]:
    from backends.base import StreamOptions
    from backends.registry import create_backend

    backend = create_backend(Settings(backend="whisper", whisper_cpu_threads=threads,
                                      inference_threads=1))
    backend.load()
    out = {}
    try:
        for clip in clips:
            stream = backend.open_stream(StreamOptions(language="en"))
            stream.accept(np.frombuffer(read_pcm16k(audio_dir / clip["audio"]), "<i2"))
            hyp = stream.finalize()
            stream.close()
            out[clip["id"]] = Text(hyp.text.strip(), hyp.words)
    finally:
        backend.close()
    return out


def run(args: argparse.Namespace) -> dict:
    clips = [c for c in load_manifest(args.audio_dir) if c["language"] == "en"]
    t0 = time.monotonic()
    before = transcribe(clips, args.audio_dir, args.threads)
    transcribe_s = time.monotonic() - t0
    numerals = Numerals("en")
    t0 = time.monotonic()
    after = {i: numerals(t, final=True) for i, t in before.items()}
    rewrite_ms = (time.monotonic() - t0) * 1000
    rows = [{"id": c["id"], "kind": c["kind"], "reference": DIGIT_REFERENCES.get(
                 c["id"], reference(c)),
             "before": before[c["id"]].text, "after": after[c["id"]].text,
             "words_spell_text": spells(after[c["id"]])}
            for c in clips]
    spelled = {c["id"]: reference(c) for c in clips if c["kind"] == "numbers"}
    spelled_rows = [{"reference": DIGIT_REFERENCES[i], "before": text,
                     "after": numerals(Text(text), final=True).text}
                    for i, text in spelled.items()]
    numbers = [r for r in rows if r["kind"] == "numbers"]
    others = [r for r in rows if r["kind"] != "numbers"]

    def score(rows: list[dict], fn) -> dict:
        return {k: round(fn([(r["reference"], r[k]) for r in rows]) * 100, 2)
                for k in ("before", "after")}

    return {
        "clips": len(rows), "transcribe_s": round(transcribe_s, 1),
        "rewrite_ms_total": round(rewrite_ms, 1),
        "numbers_neutral_wer": score(numbers, neutral_wer),
        "numbers_whisper_normaliser_wer": score(numbers, wer),
        "spelled_references_neutral_wer": score(spelled_rows, neutral_wer),
        "others_whisper_normaliser_wer": score(others, wer),
        "others_neutral_wer": score(others, neutral_wer),
        "finals_rewritten": sum(r["before"] != r["after"] for r in rows),
        "finals_whose_words_do_not_spell_text": sum(not r["words_spell_text"] for r in rows),
        "numbers_clips": numbers,
        "spelled_references": spelled_rows,
        "rewritten": [r for r in others if r["before"] != r["after"]],
    }


def table(report: dict) -> str:
    lines = [f"{'WER %':<44}{'before':>8}{'after':>8}"]
    for key, label in [
        ("numbers_neutral_wer", f"numbers ({len(report['numbers_clips'])}), digit refs, neutral"),
        ("numbers_whisper_normaliser_wer", "numbers, digit refs, Whisper normaliser"),
        ("spelled_references_neutral_wer", "numbers' spelled refs (no ASR), neutral"),
        ("others_whisper_normaliser_wer",
         f"other English ({report['clips'] - len(report['numbers_clips'])}), Whisper norm."),
        ("others_neutral_wer", "other English, neutral"),
    ]:
        lines.append(f"{label:<44}{report[key]['before']:>8.2f}{report[key]['after']:>8.2f}")
    lines.append(f"finals rewritten: {report['finals_rewritten']} of {report['clips']}; "
                 f"words not spelling the text: {report['finals_whose_words_do_not_spell_text']}; "
                 f"rewrite time: {report['rewrite_ms_total']} ms in all")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.numerals", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--audio-dir", type=Path, default=REPO_ROOT.parent / "shared" / "eval")
    p.add_argument("--threads", type=int, default=2, help="CTranslate2 threads")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    report = run(args)
    print(table(report))
    for row in report["numbers_clips"] + report["rewritten"]:
        print(f"  {row['id']}: {row['before']!r} -> {row['after']!r}")
    for row in report["spelled_references"]:
        print(f"  spelled: {row['before']!r} -> {row['after']!r}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
