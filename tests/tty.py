"""A command in a real terminal: a private tmux server, one detached pane, screen captures."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from config import REPO_ROOT


def require_tmux() -> str:
    """tmux's path; skips without it, unless CI said it must be there (``.ci/run``)."""
    path = shutil.which("tmux")
    if path is None:
        if os.environ.get("STT_REQUIRE_TMUX") == "1":
            pytest.fail("tmux is required here (STT_REQUIRE_TMUX=1)")
        pytest.skip("tmux is not installed")
    return path


class TmuxPane:
    def __init__(self, command: list[str], workdir: Path, width: int = 140,
                 height: int = 14) -> None:
        self._tmux = require_tmux()
        self._socket = f"sttd-test-{os.getpid()}-{time.monotonic_ns()}"
        self._rc = workdir / "tmux.rc"
        # The pane stays open after the command so its last screen can still be read.
        script = f"{shlex.join(map(str, command))}; echo $? > {shlex.quote(str(self._rc))}; " \
                 "sleep 600"
        self._run("new-session", "-d", "-x", str(width), "-y", str(height), "-c",
                  str(REPO_ROOT), script)

    def _run(self, *args: str) -> str:
        # The pane's size is the terminal's: a COLUMNS or LINES inherited from the test run
        # (pytest's terminal) would override it in the program.
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        return subprocess.run([self._tmux, "-L", self._socket, "-f", "/dev/null", *args],
                              capture_output=True, text=True, check=True, timeout=10,
                              env=env).stdout

    def capture(self, escapes: bool = False) -> str:
        return self._run("capture-pane", "-p", *(["-e"] if escapes else []))

    @property
    def returncode(self) -> int | None:
        text = self._rc.read_text().strip() if self._rc.exists() else ""
        return int(text) if text else None

    def watch(self, timeout: float, every: float = 0.2, escapes: bool = False) -> list[str]:
        """Screens captured until the command exits (the last one after it exited)."""
        screens = []
        deadline = time.monotonic() + timeout
        while self.returncode is None:
            if time.monotonic() > deadline:
                raise AssertionError("the command did not finish:\n" + self.capture())
            screens.append(self.capture(escapes))
            time.sleep(every)
        screens.append(self.capture(escapes))
        return screens

    def close(self) -> None:
        subprocess.run([self._tmux, "-L", self._socket, "kill-server"], capture_output=True,
                       timeout=10)

    def __enter__(self) -> TmuxPane:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
