"""`sttd stream`: lossless fast sending, the microphone's absence said in one line, and the
terminal rendering (partials rewritten in place, settled words styled) in a real terminal."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client.render import LiveRenderer, PlainRenderer, partial_text
from config import REPO_ROOT
from tests.backends.conformance import FIXTURES
from tests.server import free_port
from tests.tty import TmuxPane

STTD = Path(sys.executable).parent / "sttd"
CLIP = FIXTURES["ep_lj001_0002_0003_pause2p5"]


def stream(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([STTD, "stream", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT)


def messages(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_speed_0_loses_nothing(start_server):
    # A small input queue and simulated compute: the fast sender outruns recognition, so the
    # server stops reading and TCP backpressure paces it.
    server = start_server(in_queue_ms=500, pace_tolerance_ms=0, mock_delay_ms=40)
    url = f"ws://127.0.0.1:{server.port}/v1/stt/ws"
    runs = {}
    for speed in ("0", "1"):
        out = stream(CLIP.path, "--speed", speed, "--json", "--url", url)
        assert out.returncode == 0, out.stderr
        runs[speed] = messages(out.stdout)
    for msgs in runs.values():
        assert not [m for m in msgs if m["type"] == "warning"], msgs
    finals = {speed: [(m["text"], m["start_ms"], m["end_ms"]) for m in msgs
                      if m["type"] == "final"] for speed, msgs in runs.items()}
    assert finals["0"] == finals["1"]
    assert " ".join(text for text, _, _ in finals["0"]) == CLIP.text


def has_microphone() -> bool:
    try:
        import sounddevice

        sounddevice.check_input_settings(samplerate=16000, channels=1, dtype="int16")
        return True
    except Exception:  # ImportError, OSError (no PortAudio library), PortAudioError (no device)
        return False


def test_mic_without_a_device_says_so_in_one_line():
    if has_microphone():
        pytest.skip("this machine has a microphone")
    out = stream("--mic", "--url", f"ws://127.0.0.1:{free_port()}/v1/stt/ws", timeout=30)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("sttd stream --mic: ")
    assert re.search(r"PortAudio|input device|sounddevice", lines[0]), lines[0]
    print("\n" + lines[0])


def test_mic_ctrl_c_sends_eos_and_waits_for_the_last_final(server):
    """PortAudio faked at the OS edge: a WAV played in real time as the microphone."""
    clip = FIXTURES["lj_LJ001-0001"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "tests" / "fake_mic"),
           "FAKE_MIC_WAV": str(clip.path)}
    proc = subprocess.Popen(
        [STTD, "stream", "--mic", "--json", "--url", f"ws://127.0.0.1:{server.port}/v1/stt/ws"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT, env=env)
    try:
        lines = iter(proc.stdout.readline, "")
        # Ctrl-C in the middle of the speech, once a partial shows the segment is open.
        while json.loads(next(lines))["type"] != "partial":
            pass
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        rest = [json.loads(line) for line in lines]
        assert proc.wait(30) == 0, proc.stderr.read()
    finally:
        proc.kill()
    finals = [m for m in rest if m["type"] == "final"]
    assert finals and finals[-1]["reason"] == "eos"
    assert finals[-1]["text"] and clip.text.startswith(finals[-1]["text"].rstrip(".,"))


def test_mic_and_a_file_are_exclusive():
    assert stream("--mic", CLIP.path).returncode == 2
    assert stream().returncode == 2


def test_no_server_is_exit_3():
    out = stream(CLIP.path, "--url", f"ws://127.0.0.1:{free_port()}/v1/stt/ws")
    assert out.returncode == 3 and "cannot reach the server" in out.stderr


def test_partial_styles_settled_words_normal_and_the_rest_dim():
    line = partial_text({"text": "in being comparatively", "stable_text": "in being"})
    assert line.plain == "  … in being comparatively"
    dim = [(span.start, span.end) for span in line.spans if span.style == "dim"]
    assert dim == [(0, len("  … ")), (len("  … in being"), len(line.plain))]
    assert not line.style  # the settled words have no style of their own


def test_plain_lines_are_unchanged():
    out = io.StringIO()
    renderer = PlainRenderer(out)
    renderer.show({"type": "partial", "text": "in being", "stable_text": ""})
    renderer.show({"type": "final", "text": "in being modern.", "start_ms": 300,
                   "end_ms": 2380})
    assert out.getvalue() == "  … in being\n[   0.30-   2.38] in being modern.\n"


def test_live_renderer_leaves_only_finals():
    from rich.console import Console

    out = io.StringIO()
    renderer = LiveRenderer(Console(file=out, force_terminal=True, width=80))
    renderer.show({"type": "partial", "text": "in being", "stable_text": "in"})
    renderer.show({"type": "final", "text": "in being modern.", "start_ms": 300,
                   "end_ms": 2380})
    renderer.close()
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert "[   0.30-   2.38] in being modern." in plain


def test_partials_rewrite_one_line_in_a_terminal(start_server, tmp_path):
    server = start_server()
    url = f"ws://127.0.0.1:{server.port}/v1/stt/ws"
    with TmuxPane([STTD, "stream", CLIP.path, "--url", url], tmp_path, width=120) as pane:
        screens = pane.watch(timeout=60, every=0.1, escapes=True)
        assert pane.returncode == 0, screens[-1]
    plain = [re.sub(r"\x1b\[[0-9;]*m", "", s) for s in screens]
    # While a segment is open, its partial is one line, below the finals so far.
    partial_screens = [s for s in plain if "  … " in s]
    assert partial_screens, plain[-1]
    assert all(s.count("  … ") == 1 for s in partial_screens)
    assert any("\x1b[2m" in s for s in screens)  # the unsettled words are dim
    # Finals stay, with their times (a long one wraps at the pane's width).
    screen = " ".join(line.strip() for line in plain[-1].splitlines() if line.strip())
    texts = re.split(r"\[\s*\d+\.\d\d-\s*\d+\.\d\d\] ", screen)
    assert texts[0] == "" and " ".join(t.strip() for t in texts[1:]) == CLIP.text, screen
    assert "  … " not in plain[-1]
    print("\ntmux capture mid-stream:\n" + partial_screens[len(partial_screens) // 2].rstrip())
    print("tmux capture at the end:\n" + plain[-1].rstrip())
