"""``sttd transcribe``'s upload of one file to ``POST /v1/stt/transcribe``: the file's bytes as
they are (the server decodes them), streamed so progress counts bytes really sent, with a
retry when the server is full."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

PATH = "/v1/stt/transcribe"
CHUNK = 64 * 1024
EXTENSIONS = {"json": ".json", "text": ".txt", "srt": ".srt", "vtt": ".vtt"}
RETRY_STATUSES = (429, 503)
MAX_RETRY_WAIT_S = 30.0


class Status(enum.IntEnum):
    """What happened to one file; the value is the exit code it asks for (the worst wins,
    unreachable first: nothing else can have worked then)."""

    OK = 0
    FAILED = 1
    UNREACHABLE = 3
    BUSY = 75  # EX_TEMPFAIL: the server stayed full; try again later

    @property
    def rank(self) -> int:
        return (Status.OK, Status.FAILED, Status.BUSY, Status.UNREACHABLE).index(self)


@dataclass(frozen=True, slots=True)
class Outcome:
    path: Path
    status: Status
    body: str = ""  # the transcript, as the server rendered it
    error: str = ""


@dataclass(frozen=True, slots=True)
class Request:
    response_format: str = "json"
    language: str | None = None
    token: str | None = None
    retries: int = 2  # extra attempts on 503/429, each after the server's Retry-After

    def params(self) -> dict[str, str]:
        params = {"response_format": self.response_format}
        if self.language:
            params["language"] = self.language
        return params

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/octet-stream"}  # sniffed by the server
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers


class FileProgress(Protocol):
    def sent(self, n: int) -> None: ...

    def uploaded(self) -> None: ...

    def waiting(self, seconds: float, why: str) -> None: ...

    def restart(self) -> None: ...

    def done(self, outcome: Outcome) -> None: ...


def exit_code(outcomes: list[Outcome]) -> int:
    return max((o.status for o in outcomes), key=lambda s: s.rank, default=Status.OK).value


def output_name(path: Path, response_format: str) -> str:
    return path.stem + EXTENSIONS[response_format]


async def transcribe_file(client: httpx.AsyncClient, path: Path, request: Request,
                          progress: FileProgress) -> Outcome:
    """One file, start to end; never raises for a bad file or an unreachable server."""
    outcome = await _attempts(client, path, request, progress)
    progress.done(outcome)
    return outcome


async def _attempts(client: httpx.AsyncClient, path: Path, request: Request,
                    progress: FileProgress) -> Outcome:
    for attempt in range(request.retries + 1):
        try:
            path.open("rb").close()  # unreadable: say so before connecting
            response = await client.post(PATH, content=_chunks(path, progress),
                                         params=request.params(), headers=request.headers())
        except OSError as exc:  # httpx's own errors are no OSError: this is the file
            return Outcome(path, Status.FAILED, error=f"cannot read: {exc.strerror or exc}")
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            return Outcome(path, Status.UNREACHABLE, error=f"cannot reach the server: {exc}")
        except httpx.HTTPError as exc:
            return Outcome(path, Status.FAILED, error=f"{type(exc).__name__}: {exc}")
        if response.status_code == 200:
            return Outcome(path, Status.OK, body=response.text)
        message = error_message(response)
        if response.status_code not in RETRY_STATUSES:
            return Outcome(path, Status.FAILED, error=message)
        if attempt < request.retries:
            wait = retry_after(response)
            progress.waiting(wait, message)
            await asyncio.sleep(wait)
            progress.restart()
    return Outcome(path, Status.BUSY, error=f"{message} (after {request.retries + 1} tries)")


async def _chunks(path: Path, progress: FileProgress) -> AsyncIterator[bytes]:
    # httpx writes each chunk to the socket before asking for the next one, so this counts
    # bytes sent (the server reads a long file as fast as it recognises it).
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            yield chunk
            progress.sent(len(chunk))
    progress.uploaded()


def error_message(response: httpx.Response) -> str:
    """``HTTP 415 unsupported_audio: message`` from sttd's error object, else the body."""
    try:
        error = response.json()["error"]
        detail = f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        detail = response.text.strip()[:300] or response.reason_phrase
    return f"HTTP {response.status_code} {detail}"


def retry_after(response: httpx.Response, default: float = 1.0) -> float:
    try:
        seconds = float(response.headers.get("Retry-After", default))
    except ValueError:
        seconds = default  # an HTTP date: rare from a speech server, not worth parsing
    return min(max(seconds, 0.0), MAX_RETRY_WAIT_S)
