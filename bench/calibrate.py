"""The machine's calibration figure: how long this CPU takes for one reference decode.

Capacity on a CPU scales with how fast the CPU decodes, and machines sold as the same kind
differ by up to 2× (issue 20: 0.98 s against 1.74 s for the decode below). Every capacity
result is printed next to this figure, so a reader can scale it to their machine: capacity
in streams × this figure is (to first order) the same on any CPU of the same core count.

The reference decode is faster-whisper's own ``transcribe`` of ``references/fw_jfk.wav``
(11 s) with the bundled tiny.en model (CTranslate2 int8), beam 1, the 30 s padded window,
no VAD: median of ``repeats`` runs after a warm-up, on one thread and on every core.

    python -m bench.calibrate
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import wave

import numpy as np

from config import REPO_ROOT

CLIP = REPO_ROOT / "references" / "fw_jfk.wav"


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _decode_seconds(threads: int, audio: np.ndarray, repeats: int) -> float:
    from faster_whisper import WhisperModel

    from backends.whisper import bundled_model

    model = WhisperModel(bundled_model(), device="cpu", compute_type="int8",
                         cpu_threads=threads, local_files_only=True)

    def once() -> float:
        t0 = time.perf_counter()
        segments, _ = model.transcribe(audio, language="en", beam_size=1, temperature=0.0,
                                       condition_on_previous_text=False, vad_filter=False)
        list(segments)  # the decode runs as the generator is consumed
        return time.perf_counter() - t0

    once()  # warm-up: allocations and caches
    return statistics.median(once() for _ in range(repeats))


def calibrate(repeats: int = 3) -> dict:
    with wave.open(str(CLIP)) as w:
        audio = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
    cores = os.cpu_count() or 1
    one = _decode_seconds(1, audio, repeats)
    every = _decode_seconds(cores, audio, repeats) if cores > 1 else one
    return {
        "reference": "faster-whisper transcribe, tiny.en int8, beam 1, 30 s window, "
                     f"{CLIP.name} ({audio.size / 16000:.1f} s)",
        "decode_1_thread_s": round(one, 3),
        "decode_all_threads_s": round(every, 3),
        "cores": cores,
        "cpu": cpu_model(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def describe(c: dict) -> str:
    return (f"calibration: reference decode {c['decode_1_thread_s']:.2f} s on 1 thread, "
            f"{c['decode_all_threads_s']:.2f} s on {c['cores']} ({c['cpu']}; "
            f"load {c['load_average_1m']})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.calibrate", description=__doc__)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print the figure as JSON")
    args = p.parse_args(argv)
    c = calibrate(args.repeats)
    print(json.dumps(c, indent=1) if args.json else describe(c))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
