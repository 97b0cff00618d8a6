"""The commands a user runs: `sttd serve`, `sttd stream`, and `uvicorn app:app`."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from config import REPO_ROOT
from tests.backends.conformance import FIXTURES
from tests.server import free_port

BIN = Path(sys.executable).parent


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("server never became ready")


@pytest.fixture
def env():
    return {**os.environ, "STT_LOG_LEVEL": "warning", "STT_BACKEND": "mock", "STT_VAD": "energy"}


def test_sttd_serve_and_stream(env):
    port = free_port()
    server = subprocess.Popen(
        [BIN / "sttd", "serve", "--backend", "mock", "--port", str(port)],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_ready(port, server)
        clip = FIXTURES["ep_lj001_0002_0003_pause2p5"]
        out = subprocess.run(
            [BIN / "sttd", "stream", str(clip.path), "--speed", "0",
             "--url", f"ws://127.0.0.1:{port}/v1/stt/ws"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout
        finals = [line.split("] ", 1)[1] for line in out.splitlines() if line.startswith("[")]
        assert " ".join(finals) == clip.text
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(20) == 0


def test_default_backend_is_whisper_and_transcribes_english(env, tmp_path):
    pytest.importorskip("faster_whisper")
    from tests.backends.test_whisper import word_error_rate

    env.pop("STT_BACKEND")
    env.pop("STT_VAD")  # the product defaults: whisper + silero
    port = free_port()
    server = subprocess.Popen(
        [BIN / "sttd", "serve", "--port", str(port)],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"ws://127.0.0.1:{port}/v1/stt/ws"
    try:
        wait_ready(port, server, timeout=60)
        for clip_id, max_wer in (("ep_lj001_0002_0003_pause2p5", 0.15), ("fw_jfk", 0.15),
                                 ("gen_pinknoise_8s", None), ("kgs_silence", None)):
            clip = FIXTURES[clip_id]
            out = subprocess.run(
                [BIN / "sttd", "stream", str(clip.path), "--speed", "0", "--url", url],
                capture_output=True, text=True, timeout=120, check=True,
            ).stdout
            text = " ".join(line.split("] ", 1)[1] for line in out.splitlines()
                            if line.startswith("[") and "] " in line)
            if max_wer is None:
                assert text.strip() == "", f"words on {clip_id}: {text!r}"
            else:
                assert word_error_rate(text, clip.text) <= max_wer, (text, clip.text)
        # compressed files: decoded by the client, or sent as they are for the server to decode
        from tests.media import encode

        clip = FIXTURES["fw_jfk"]
        for name, codec in (("jfk.mp3", "pcm"), ("jfk.ogg", "auto")):
            path = tmp_path / name
            path.write_bytes(encode(clip.pcm(), "mp3_44k" if codec == "pcm"
                                    else "ogg_opus_48k_stereo"))
            out = subprocess.run(
                [BIN / "sttd", "stream", str(path), "--codec", codec, "--speed", "4",
                 "--url", url], capture_output=True, text=True, timeout=120, check=True,
            ).stdout
            text = " ".join(line.split("] ", 1)[1] for line in out.splitlines()
                            if line.startswith("[") and "] " in line)
            assert word_error_rate(text, clip.text) <= 0.15, (name, text)
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(20) == 0


def test_sttd_stream_reports_a_bad_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav")
    out = subprocess.run([BIN / "sttd", "stream", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2 and "bad.wav" in out.stderr


def test_uvicorn_app_app_from_the_repo_root(env):
    port = free_port()
    server = subprocess.Popen(
        [BIN / "uvicorn", "app:app", "--port", str(port)],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_ready(port, server)
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(20) == 0
