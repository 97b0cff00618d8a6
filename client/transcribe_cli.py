"""``sttd transcribe FILE…``: its arguments, where each transcript goes, and the exit code.

Exit codes: 0 every file transcribed; 1 some file failed (unreadable, refused, not audio);
2 usage; 3 no server to reach (``--local``: the backend did not start); 75 the server stayed
full (EX_TEMPFAIL). With several kinds of failure: 3 over 75 over 1.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import httpx

from backends.registry import available
from client.local import LocalStartFailed, local_client
from client.progress import failure_line, progress_for
from client.transcribe import (
    PATH,
    Outcome,
    Request,
    Status,
    exit_code,
    output_name,
    transcribe_file,
)

DEFAULT_URL = "http://127.0.0.1:8000"


def add_transcribe_parser(sub) -> None:
    p = sub.add_parser("transcribe", help="transcribe audio files: text, JSON or subtitles",
                       description="Upload audio files to POST /v1/stt/transcribe (or "
                       "recognise them here with --local) and write their transcripts.")
    p.add_argument("files", type=Path, nargs="+", metavar="FILE",
                   help="any audio file the server decodes (WAV, MP3, Ogg, FLAC, M4A, …)")
    p.add_argument("-f", "--format", choices=("json", "text", "srt", "vtt"), default="text",
                   help="response format (default: text)")
    p.add_argument("-o", "--output", type=Path, metavar="OUT",
                   help="one file: write here (a directory: FILE's name with the format's "
                   "extension); several files: a directory, one output each")
    p.add_argument("--url", default=DEFAULT_URL, help=f"server (default {DEFAULT_URL})")
    p.add_argument("--token", help="API key, when the server sets STT_AUTH_TOKENS")
    p.add_argument("--language", help="'auto' or a BCP-47 tag such as 'en'")
    p.add_argument("--concurrency", type=_positive, default=2,
                   help="files in flight at once (default 2)")
    p.add_argument("--local", action="store_true",
                   help="no server: recognise in this process with the configured backend")
    p.add_argument("--backend", choices=available(),
                   help="with --local: the backend (default STT_BACKEND)")


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


async def transcribe_command(args: argparse.Namespace) -> int:
    try:
        sink = Sink(args.files, args.output, args.format)
    except UsageError as exc:
        print(f"sttd transcribe: {exc}", file=sys.stderr)
        return 2
    request = Request(response_format=args.format, language=args.language, token=args.token)
    with progress_for() as progress:
        if progress.print_above is not None and sys.stdout.isatty():
            sink.echo = progress.print_above  # the same screen: keep the bars intact
        try:
            async with _client(args) as client:
                outcomes = await transcribe_all(client, args.files, request, progress, sink,
                                                args.concurrency,
                                                "recognising" if args.local else "uploading")
        except LocalStartFailed as exc:
            print(f"sttd transcribe --local: the backend did not start: {exc}",
                  file=sys.stderr)
            return Status.UNREACHABLE.value
    return exit_code(outcomes)


def _client(args: argparse.Namespace):
    if not args.local:
        base = args.url.rstrip("/").removesuffix(PATH)
        # No read or write timeout: a full server slows the upload, a long file's tail takes
        # time to recognise; both are progress, not failure.
        return httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(None, connect=10))
    return local_client(args.backend)


async def transcribe_all(client: httpx.AsyncClient, files: list[Path], request: Request,
                         progress, sink: Sink, concurrency: int,
                         sending: str = "uploading") -> list[Outcome]:
    """Every file, ``concurrency`` at a time; each written in input order once it and those
    before it are done."""
    gate = asyncio.Semaphore(concurrency)

    async def one(path: Path) -> Outcome:
        async with gate:
            return await transcribe_file(client, path, request, progress.file(path, sending))

    tasks = [asyncio.create_task(one(path)) for path in files]
    outcomes = []
    try:
        for task in tasks:
            outcome = sink.write(done := await task)
            if outcome is not done:  # transcribed, but the output could not be written
                print(failure_line(outcome), file=sys.stderr)
            outcomes.append(outcome)
    finally:
        for task in tasks:
            task.cancel()
    return outcomes


class UsageError(Exception):
    pass


class Sink:
    """Where transcripts go: stdout (with ``==> FILE <==`` headers for several), one file,
    or a directory."""

    def __init__(self, files: list[Path], output: Path | None, fmt: str) -> None:
        self._fmt, self._many = fmt, len(files) > 1
        self.echo = _write_stdout
        self._dir = self._file = None
        if output is None:
            return
        if output.is_dir() or self._many:
            if output.exists() and not output.is_dir():
                raise UsageError(f"-o {output}: with several files, OUT is a directory")
            self._dir = output
        else:
            self._file = output

    def write(self, outcome: Outcome) -> Outcome:
        if outcome.status is not Status.OK:
            return outcome
        try:
            if self._dir is not None:
                self._dir.mkdir(parents=True, exist_ok=True)
                (self._dir / output_name(outcome.path, self._fmt)).write_text(outcome.body)
            elif self._file is not None:
                self._file.write_text(outcome.body)
            else:
                self._print(outcome)
        except OSError as exc:
            return Outcome(outcome.path, Status.FAILED, error=f"cannot write: {exc}")
        return outcome

    def _print(self, outcome: Outcome) -> None:
        body = outcome.body if outcome.body.endswith("\n") else outcome.body + "\n"
        if self._many:
            body = f"==> {outcome.path} <==\n{body}\n"
        self.echo(body)


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
