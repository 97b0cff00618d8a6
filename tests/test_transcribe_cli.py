"""`sttd transcribe` against real servers: the batch endpoint's own text, every format, output
files, exit codes for scripts, and its progress bar in a real terminal (tmux)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from websockets.sync.client import connect

from config import REPO_ROOT
from tests.backends.conformance import FIXTURES
from tests.media import wav_bytes
from tests.server import RunningServer, free_port
from tests.tty import TmuxPane

STTD = Path(sys.executable).parent / "sttd"
ENGLISH = ("fw_jfk", "lj_LJ001-0001")
SPOKEN_ENGLISH = [f.id for f in FIXTURES.values()
                  if f.language == "en" and f.kind in ("read", "endpointing")]
TURNS = FIXTURES["ep_ls_three_turns_pause4"]


def sttd(*args, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([STTD, "transcribe", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO_ROOT,
                          env={**os.environ, **(env or {})})


def endpoint(server, path: Path, fmt: str) -> httpx.Response:
    """The batch endpoint called directly, the way its own tests call it."""
    return httpx.post(f"{server.http}/v1/stt/transcribe", params={"response_format": fmt},
                      content=path.read_bytes(), headers={"Content-Type": "audio/wav"},
                      timeout=120)


@pytest.fixture(scope="module")
def product():
    """sttd's defaults, Whisper tiny.en and Silero VAD, shared by the module's tests."""
    pytest.importorskip("faster_whisper")
    server = RunningServer(backend="whisper", vad="silero")
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("clip_id", SPOKEN_ENGLISH)
def test_text_is_the_batch_endpoints_text(product, clip_id):
    path = FIXTURES[clip_id].path
    expected = endpoint(product, path, "text")
    assert expected.status_code == 200 and expected.text.strip()
    out = sttd(path, "-f", "text", "--url", product.http)
    assert out.returncode == 0, out.stderr
    assert out.stdout == expected.text
    assert f"{path}: done in" in out.stderr  # not a TTY: one status line per file


def test_local_whisper_gives_the_servers_text(product):
    path = FIXTURES["fw_jfk"].path
    out = sttd(path, "--local", "-f", "srt", env={"STT_BACKEND": "whisper", "STT_VAD": "silero"})
    assert out.returncode == 0, out.stderr
    assert out.stdout == endpoint(product, path, "srt").text


def test_json_srt_vtt_parse_and_match_the_endpoint(mock):
    path = TURNS.path
    out = sttd(path, "-f", "json", "--url", mock.http)
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    expected = endpoint(mock, path, "json").json()
    assert body["text"] == expected["text"] and body["text"]
    assert [s["text"] for s in body["segments"]] == [s["text"] for s in expected["segments"]]

    srt = sttd(path, "-f", "srt", "--url", mock.http).stdout
    cues = [block.splitlines() for block in srt.strip().split("\n\n")]
    assert [int(cue[0]) for cue in cues] == list(range(1, len(cues) + 1))
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}", c[1]) for c in cues)
    assert " ".join(" ".join(c[2:]) for c in cues) == body["text"]

    vtt = sttd(path, "-f", "vtt", "--url", mock.http).stdout
    assert vtt.startswith("WEBVTT\n\n")
    times = re.findall(r"^(\d\d:\d\d:\d\d\.\d{3}) --> (\d\d:\d\d:\d\d\.\d{3})$", vtt, re.M)
    assert len(times) == len(cues)


def test_several_files_into_a_directory_and_on_stdout(mock, tmp_path):
    a, b = FIXTURES["lj_LJ001-0001"].path, TURNS.path
    out = sttd(a, b, "-f", "srt", "-o", tmp_path / "subs", "--concurrency", "2",
               "--url", mock.http)
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""
    written = sorted(p.name for p in (tmp_path / "subs").iterdir())
    assert written == ["ep_ls_three_turns_pause4.srt", "lj_LJ001-0001.srt"]
    for path in (a, b):
        srt = (tmp_path / "subs" / f"{path.stem}.srt").read_text()
        assert srt == endpoint(mock, path, "srt").text

    both = sttd(a, b, "--url", mock.http)
    assert both.returncode == 0, both.stderr
    assert both.stdout.index(f"==> {a} <==") < both.stdout.index(f"==> {b} <==")


def test_one_file_to_a_named_output(mock, tmp_path):
    target = tmp_path / "jfk.vtt"
    out = sttd(FIXTURES["fw_jfk"].path, "-f", "vtt", "-o", target, "--url", mock.http)
    assert out.returncode == 0, out.stderr
    assert target.read_text().startswith("WEBVTT")


def test_a_non_audio_file_fails_with_the_servers_message(mock, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("these are not the droids you are looking for\n" * 50)
    refused = endpoint(mock, bad, "text")
    assert refused.status_code >= 400
    message = refused.json()["error"]["message"]
    good = FIXTURES["fw_jfk"].path
    out = sttd(bad, good, "--url", mock.http)
    assert out.returncode == 1
    assert f"notes.txt: HTTP {refused.status_code}" in out.stderr and message in out.stderr
    assert f"==> {good} <==" in out.stdout  # the other file is still transcribed


def test_an_unreadable_file_fails(mock, tmp_path):
    out = sttd(tmp_path / "missing.wav", "--url", mock.http)
    assert out.returncode == 1 and "missing.wav: cannot read" in out.stderr


def test_no_server_is_exit_3():
    out = sttd(FIXTURES["fw_jfk"].path, "--url", f"http://127.0.0.1:{free_port()}")
    assert out.returncode == 3 and "cannot reach the server" in out.stderr


def test_a_full_server_is_exit_75_after_retries(start_server):
    server = start_server(max_sessions=1)
    with connect(server.ws_url()) as ws:  # holds the only slot
        assert json.loads(ws.recv())["type"] == "ready"
        t0 = time.monotonic()
        out = sttd(FIXTURES["fw_jfk"].path, "--url", server.http)
    assert out.returncode == 75, out.stderr
    assert "HTTP 503 capacity" in out.stderr and "after 3 tries" in out.stderr
    assert time.monotonic() - t0 >= 2  # Retry-After: 1, twice


def test_a_slot_freed_during_the_retries_is_used(start_server):
    server = start_server(max_sessions=1)
    with connect(server.ws_url()) as ws:
        assert json.loads(ws.recv())["type"] == "ready"
        threading.Timer(1.5, ws.close).start()  # frees the slot between the first retries
        out = sttd(FIXTURES["fw_jfk"].path, "--url", server.http)
    assert out.returncode == 0, out.stderr
    assert "HTTP 503 capacity" in out.stderr and "retrying in 1 s" in out.stderr
    assert out.stdout.strip() == FIXTURES["fw_jfk"].text


def test_usage_errors_are_exit_2(tmp_path):
    clip = FIXTURES["fw_jfk"].path
    assert sttd(clip, "-f", "docx").returncode == 2
    assert sttd(clip, "--concurrency", "0").returncode == 2
    existing = tmp_path / "out.txt"
    existing.write_text("")
    out = sttd(clip, clip, "-o", existing)
    assert out.returncode == 2 and "directory" in out.stderr


def test_local_gives_the_servers_text_without_a_server(server):
    env = {"STT_BACKEND": "mock", "STT_VAD": "energy"}  # as the test server is configured
    for fmt in ("text", "srt"):
        out = sttd(TURNS.path, "--local", "-f", fmt, env=env)
        assert out.returncode == 0, out.stderr
        assert out.stdout == endpoint(server, TURNS.path, fmt).text


def test_local_reports_a_backend_that_cannot_start():
    out = sttd(TURNS.path, "--local", env={"STT_BACKEND": "mock", "STT_VAD": "energy",
                                           "STT_MOCK_FIXTURES": "/nonexistent"})
    assert out.returncode == 3, out.stderr
    assert "the backend did not start" in out.stderr


def long_wav(path: Path, seconds: float) -> Path:
    """English clips back to back: minutes of speech with pauses, as one WAV."""
    clips = [FIXTURES[c].pcm() for c in ("ep_lj001_0002_0003_pause2p5", "fw_jfk", *ENGLISH,
                                         "ep_ls_three_turns_pause4")]
    pcm = np.concatenate(clips)
    pcm = np.tile(pcm, int(seconds * 16000 // pcm.size) + 1)[: int(seconds * 16000)]
    path.write_bytes(wav_bytes(pcm))
    return path


def test_progress_bar_in_a_terminal(start_server, tmp_path):
    # Recognition slower than the upload (simulated compute per segment) makes the server
    # read the body slowly, so the bar is seen moving.
    server = start_server(mock_delay_ms=120, in_queue_ms=1000)  # ~65 segments: ~8 s
    audio = long_wav(tmp_path / "talk.wav", 600)  # 19 MB: far more than socket buffers
    out = tmp_path / "talk.txt"
    with TmuxPane([STTD, "transcribe", audio, "-o", out, "--url", server.http],
                  tmp_path) as pane:
        screens = pane.watch(timeout=120)
        assert pane.returncode == 0, screens[-1]
    assert out.read_text().strip()
    moving = [s for s in screens if re.search(r"talk\.wav.*━.*\b([1-9]\d?)%", s)]
    assert moving, "no bar part-way:\n" + "\n---\n".join(screens[-3:])
    assert any(re.search(r"talk\.wav.*━.*recognising", s) for s in screens)  # the tail
    assert re.search(r"✓ talk\.wav.*━.*100%.*done", screens[-1]), screens[-1]
    seen = sorted({int(m) for s in moving for m in re.findall(r"(\d+)%", s)})
    print(f"\npercentages seen part-way: {seen}")
    print("tmux capture part-way:\n" + moving[len(moving) // 2].rstrip())
    print("tmux capture at the end:\n" + screens[-1].rstrip())
