"""Progress of ``sttd transcribe`` on stderr: a rich bar per file in a terminal (bytes sent,
then "recognising" until the answer), one line per file otherwise."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO

from client.transcribe import Outcome, Status

PROG = "sttd transcribe"


def failure_line(outcome: Outcome) -> str:
    return f"{PROG}: {outcome.path}: {outcome.error}"


class PlainProgress:
    """For logs and pipes: nothing while it runs, one line per file when it ends."""

    def __init__(self, err: TextIO | None = None) -> None:
        self._err = err or sys.stderr

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc) -> None:
        pass

    print_above = None  # nothing drawn on the terminal to keep clear of

    def file(self, path: Path, sending: str = "uploading") -> PlainFile:
        return PlainFile(path, self._err)


class PlainFile:
    def __init__(self, path: Path, err: TextIO) -> None:
        self._path, self._err, self._t0 = path, err, time.monotonic()

    def sent(self, n: int) -> None:
        pass

    def uploaded(self) -> None:
        pass

    def waiting(self, seconds: float, why: str) -> None:
        print(f"{PROG}: {self._path}: {why}; retrying in {seconds:g} s", file=self._err,
              flush=True)

    def restart(self) -> None:
        pass

    def done(self, outcome: Outcome) -> None:
        line = (f"{PROG}: {self._path}: done in {time.monotonic() - self._t0:.1f} s"
                if outcome.status is Status.OK else failure_line(outcome))
        print(line, file=self._err, flush=True)


class RichProgress:
    """One bar per file, all in one live display on stderr."""

    def __init__(self, console=None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            _mark_column(),
            TextColumn("{task.description}", style="bold"),
            BarColumn(), TaskProgressColumn(), DownloadColumn(),
            TextColumn("{task.fields[phase]}"), TimeElapsedColumn(),
            console=console or Console(stderr=True),
            # Left alone: rich would send stdout (the transcripts) into stderr's console.
            redirect_stdout=False, redirect_stderr=False,
        )

    def print_above(self, text: str) -> None:
        """Text for a terminal that shows the bars too, written above them."""
        self._progress.console.print(text, end="", markup=False, highlight=False,
                                     soft_wrap=True)

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def file(self, path: Path, sending: str = "uploading") -> RichFile:
        return RichFile(self._progress, path, sending)


def _mark_column():
    """The spinner while a file is in flight, then ✓ or ✗ (rich is imported on first use)."""
    from rich.progress import SpinnerColumn
    from rich.text import Text

    class Mark(SpinnerColumn):
        def render(self, task):
            if "ok" in task.fields:
                return Text("✓", style="green") if task.fields["ok"] else Text("✗", "red")
            return super().render(task)

    return Mark()


class RichFile:
    def __init__(self, progress, path: Path, sending: str) -> None:
        self._p, self._sending = progress, sending
        try:
            # One unit more than the bytes: the answer. The task stays unfinished (its
            # spinner turning, its clock running) while the server recognises the tail.
            self._total = path.stat().st_size + 1
        except OSError:
            self._total = 1
        name = path.name if len(path.name) <= 32 else path.name[:31] + "…"
        self._task = progress.add_task(name, total=self._total, phase=sending)

    def sent(self, n: int) -> None:
        self._p.advance(self._task, n)

    def uploaded(self) -> None:
        self._p.update(self._task, phase="recognising")

    def waiting(self, seconds: float, why: str) -> None:
        self._p.update(self._task, phase=f"server full, retry in {seconds:g} s")

    def restart(self) -> None:
        self._p.reset(self._task, phase=self._sending)

    def done(self, outcome: Outcome) -> None:
        ok = outcome.status is Status.OK
        self._p.update(self._task, completed=self._total if ok else 0, ok=ok,
                       phase="[green]done" if ok else "[red]failed")
        self._p.stop_task(self._task)
        if not ok:
            self._p.console.print(failure_line(outcome), markup=False, highlight=False)


def progress_for(err: TextIO | None = None) -> PlainProgress | RichProgress:
    err = err or sys.stderr
    return RichProgress() if err.isatty() else PlainProgress(err)
