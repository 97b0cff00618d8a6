"""Reference clips (audio + exact transcript) from ``references/``, for the mock and tests."""

from __future__ import annotations

import json
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True, slots=True)
class Utterance:
    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True, slots=True)
class Fixture:
    id: str
    path: Path
    text: str
    language: str
    kind: str
    utterances: tuple[Utterance, ...]

    def pcm(self) -> np.ndarray:
        return read_wav_s16(self.path)


def read_wav_s16(path: Path, expect_rate: int = 16000) -> np.ndarray:
    """Mono 16-bit PCM WAV at ``expect_rate`` as int16 samples."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1 or w.getframerate() != expect_rate:
            raise ValueError(f"{path}: expected mono s16 at {expect_rate} Hz")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy()


def load_fixtures(directory: Path) -> list[Fixture]:
    fixtures = []
    for line in (directory / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        d = json.loads(line)
        fixtures.append(
            Fixture(
                id=d["id"],
                path=directory / d["audio"],
                text=d["text"],
                language=d["language"],
                kind=d["kind"],
                utterances=tuple(Utterance(**u) for u in d["utterances"]),
            )
        )
    return fixtures
