"""Reading a transcription upload as it arrives: a raw ``audio/*`` body or a multipart form
whose ``file`` part is streamed (python-multipart's push parser, so nothing is spooled), with
the size and time limits enforced while reading, never after.

Time limits (``UploadBody``) count only the time the server waits for the client's bytes with
room to take them: when recognition falls behind, the server stops reading once
``UploadBody.READ_AHEAD`` bytes wait (backpressure), and that time is the server's, not the
client's (a slow backend never makes an upload "too slow"). Three limits, each a 408
``upload_timeout``:

- idle: nothing arrived for ``idle_timeout_s`` (a client gone quiet);
- deadline: the body took more than ``deadline_s`` in total;
- rate: once ``idle_timeout_s`` has passed, the body must have averaged at least
  ``min_bytes_per_sec`` since it started, *or* have carried audio at least half as fast as
  real time (``audio_seconds``) while averaging at least an eighth of that minimum (512 B/s,
  4 kbit/s, at the default): a live capture streamed as a chunked upload at real time passes
  at any speech codec's bitrate (Opus ≥ 6 kbit/s, MP3, G.711, PCM), while compressed silence
  crafted to be real-time audio for a few bytes a second (FLAC: ~3 B/s) does not.

  An average over the whole body, not a sliding window: bursts and stalls of a client on a
  poor link are absorbed (a window would refuse a client that catches up after a stall),
  while holding a session slot for T seconds still costs at least ``min_bytes_per_sec / 8 × T``
  bytes whatever the sending pattern (sending fast first only buys time already paid for).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from protocol.common import ProtocolError
from session.events import ErrorCode

_RAW_TYPES = ("audio/", "video/", "application/octet-stream", "application/ogg")
_MAX_FIELD_BYTES = 8192
_SNIFF_BYTES = 12  # an MP4/M4A file says "ftyp" in bytes 4–8
_REALTIME_SHARE = 0.5  # audio at ≥ this share of real time passes the rate limit (decoder lag)
_REALTIME_FLOOR = 1 / 8  # ... if its bytes still average ≥ this share of the minimum rate


@dataclass
class FilePart:
    chunks: AsyncIterator[bytes]
    is_mp4: bool


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int
    idle_timeout_s: float = 30.0
    min_bytes_per_sec: float = 0.0  # 0: no minimum rate
    deadline_s: float = 3600.0


class UploadBody:
    """The request body straight from the ASGI ``receive`` channel, with the upload's limits.

    ``run()`` (a task of its own) reads the body ahead of its consumer, at most
    ``READ_AHEAD`` bytes, then keeps listening on the channel: it returns when the client
    disconnects (uvicorn delivers ``http.disconnect`` there once the connection is lost, if
    someone is receiving), and raises ``ProtocolError`` on a limit (408, 413). Reading ahead
    is what lets a client that sent a small body and left be noticed at once: uvicorn stops
    reading the socket, and so cannot see the client's FIN, while more than 64 KB of body
    waits for the app. ``chunks()`` is the consumer's side; it starts ``run()`` reading (not
    before: a ``receive`` would send ``100 Continue`` before the request is checked)."""

    READ_AHEAD = 256 * 1024

    def __init__(self, receive: Callable[[], Awaitable[dict]], limits: UploadLimits,
                 audio_seconds: Callable[[], float] = lambda: 0.0) -> None:
        self._receive = receive
        self._limits = limits
        self._audio_seconds = audio_seconds
        self._go = asyncio.Event()  # the consumer wants the body
        self._changed = asyncio.Event()  # a chunk, the end, or room in the buffer
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._stopped = False  # run() returned or raised: nothing more will come
        self.complete = False  # the last body message has arrived
        self.client_left = False  # http.disconnect came
        self.bytes = 0
        self.client_seconds = 0.0  # time spent waiting for the client's bytes

    async def run(self) -> None:
        await self._go.wait()
        try:
            while not self.complete:
                while self._buffered >= self.READ_AHEAD:  # the consumer is behind: not the
                    await self._wait_change()  # client's time, and nothing is read meanwhile
                message = await self._next()
                if message["type"] == "http.disconnect":
                    self.client_left = True
                    return
                chunk = message.get("body", b"")
                self.bytes += len(chunk)
                if self.bytes > self._limits.max_bytes:
                    raise _too_large(self._limits.max_bytes)
                self.complete = not message.get("more_body", False)
                if chunk:
                    self._chunks.append(chunk)
                    self._buffered += len(chunk)
                self._changed.set()
            while (await self._receive())["type"] != "http.disconnect":
                pass  # an empty http.request may come before it
            self.client_left = True
        finally:
            self._stopped = True
            self._changed.set()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's chunks; ``ClientDisconnect`` if it ends early (the client left, or a
        limit was hit: ``run()`` has the error)."""
        self._go.set()
        while True:
            while not self._chunks:
                if self.complete:
                    return
                if self._stopped:
                    raise ClientDisconnect()
                await self._wait_change()
            chunk = self._chunks.popleft()
            self._buffered -= len(chunk)
            self._changed.set()
            yield chunk

    async def _wait_change(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    async def _next(self) -> dict:
        """The next ASGI message, waiting no longer than the limits allow."""
        waited = 0.0  # since the last message (the idle limit)
        while True:
            # Checked again after each timeout: audio may have been decoded meanwhile.
            limit, at = self._first_limit(waited)
            if at - self.client_seconds < 0.001:
                raise ProtocolError(ErrorCode.UPLOAD_TIMEOUT, self._message(limit))
            started = time.monotonic()
            try:
                # Not wait_for: on 3.11 it swallows a cancellation that meets a message.
                async with asyncio.timeout(at - self.client_seconds):
                    return await self._receive()
            except TimeoutError:
                pass
            finally:
                spent = time.monotonic() - started
                self.client_seconds += spent
                waited += spent

    def _first_limit(self, waited: float) -> tuple[str, float]:
        """The limit that will be hit first if nothing more arrives, and when (in client
        seconds)."""
        lim = self._limits
        t = self.client_seconds
        candidates = [("idle", t - waited + lim.idle_timeout_s), ("deadline", lim.deadline_s)]
        if lim.min_bytes_per_sec > 0:  # fine while bytes ≥ rate·t or (audio ≥ share·t and
            rate = lim.min_bytes_per_sec  # bytes ≥ floor·rate·t)
            realtime = min(self._audio_seconds() / _REALTIME_SHARE,
                           self.bytes / (rate * _REALTIME_FLOOR))
            candidates.append(("rate", max(lim.idle_timeout_s, self.bytes / rate, realtime)))
        return min(candidates, key=lambda c: c[1])

    def _message(self, limit: str) -> str:
        lim = self._limits
        if limit == "idle":
            return f"upload sent nothing for {lim.idle_timeout_s:g} s"
        if limit == "deadline":
            return f"upload took longer than the limit of {lim.deadline_s:g} s to arrive"
        rate = lim.min_bytes_per_sec
        return (f"upload too slow: {self.bytes} bytes in {self.client_seconds:.0f} s, below the "
                f"minimum average of {rate:g} bytes/s (or {rate * _REALTIME_FLOOR:g} bytes/s "
                "for audio arriving at real time)")


async def iter_upload(request: Request, body: UploadBody, fields: dict[str, str | list[str]],
                      *, any_type: bool = False) -> AsyncIterator[FilePart]:
    """Yields the one audio part; form fields found before it are merged into ``fields``
    (after it: only ``response_format`` may still change). Ends once the whole body has been
    read: a multipart body must end with its closing boundary (else 400: cut off).
    ``any_type``: a body that is not multipart is audio whatever its Content-Type says
    (Deepgram's clients; ``curl --data-binary`` sends a form type)."""
    max_bytes = body._limits.max_bytes
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise _too_large(max_bytes)
    media_type, options = parse_options_header(request.headers.get("content-type"))
    media = media_type.decode("latin-1").lower()
    chunks = body.chunks()
    if media == "multipart/form-data":
        boundary = options.get(b"boundary")
        if not boundary:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "multipart body without a boundary")
        events = _multipart_events(chunks, boundary)
    elif any_type or media.startswith(_RAW_TYPES):
        events = _raw_events(chunks)
    else:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_AUDIO,
            f"Content-Type {media or '(none)'} is not audio: send audio/* (or "
            "application/octet-stream) as the body, or multipart/form-data with a 'file' field",
        )
    seen_file = False
    async for kind, name, value in events:
        if kind == "field":
            if seen_file and name != "response_format" and fields.get(name) != value:
                raise ProtocolError(ErrorCode.BAD_REQUEST,
                                    f"form field {name!r} must come before the file")
            if name.endswith("[]"):  # repeated: OpenAI's timestamp_granularities[], include[]
                fields.setdefault(name, []).append(value)
            else:
                fields[name] = value
        elif kind == "file":
            if seen_file:
                raise ProtocolError(ErrorCode.BAD_REQUEST, "send one file per request")
            seen_file = True
            head, rest = await _sniff(events)
            yield FilePart(_prepend(head, rest), is_mp4=head[4:8] == b"ftyp")


def _too_large(max_bytes: int) -> ProtocolError:
    return ProtocolError(ErrorCode.UPLOAD_TOO_LARGE,
                         f"upload is larger than the limit of {max_bytes} bytes")


async def _raw_events(body: AsyncIterator[bytes]):
    yield "file", "file", ""
    async for chunk in body:
        yield "data", "", chunk
    yield "end", "", ""


async def _multipart_events(body: AsyncIterator[bytes], boundary: bytes):
    """("field", name, value), ("file", name, ""), ("data", "", bytes), ("end", "", "")."""
    out: list[tuple[str, str, object]] = []
    closed = []  # the closing boundary was seen
    part = {"headers": {}, "field": b"", "name": "", "is_file": False, "buf": bytearray()}
    header = {"field": bytearray(), "value": bytearray()}

    def on_part_begin():
        part.update(headers={}, name="", is_file=False, buf=bytearray())

    def on_header_field(data, start, end):
        header["field"] += data[start:end]

    def on_header_value(data, start, end):
        header["value"] += data[start:end]

    def on_header_end():
        part["headers"][bytes(header["field"]).lower()] = bytes(header["value"])
        header["field"], header["value"] = bytearray(), bytearray()

    def on_headers_finished():
        _, disposition = parse_options_header(part["headers"].get(b"content-disposition"))
        part["name"] = disposition.get(b"name", b"").decode("utf-8", "replace")
        part["is_file"] = b"filename" in disposition or part["name"] == "file"
        if part["is_file"]:
            out.append(("file", part["name"], ""))

    def on_part_data(data, start, end):
        if part["is_file"]:
            out.append(("data", "", bytes(data[start:end])))
        else:
            part["buf"] += data[start:end]
            if len(part["buf"]) > _MAX_FIELD_BYTES:
                raise ProtocolError(ErrorCode.BAD_REQUEST,
                                    f"form field {part['name']!r} is too long")

    def on_part_end():
        if part["is_file"]:
            out.append(("end", "", ""))
        else:
            out.append(("field", part["name"], part["buf"].decode("utf-8", "replace")))

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end, "on_end": lambda: closed.append(True),
    })
    async for chunk in body:
        try:
            parser.write(chunk)
        except ProtocolError:
            raise
        except Exception as exc:  # python-multipart's MultipartParseError and friends
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"malformed multipart body: {exc}") from None
        for event in out:
            yield event
        out.clear()
    parser.finalize()
    for event in out:
        yield event
    if not closed:  # python-multipart's finalize() does not check this
        raise ProtocolError(ErrorCode.BAD_REQUEST,
                            "the upload was cut off: the multipart body ended before its "
                            "closing boundary")


async def _sniff(events) -> tuple[bytes, AsyncIterator[bytes]]:
    """The file's first bytes (to recognise MP4), and an iterator over the rest of it."""
    head = b""
    ended = False
    while len(head) < _SNIFF_BYTES:
        try:
            kind, _, value = await anext(events)
        except StopAsyncIteration:
            ended = True
            break
        if kind == "end":
            ended = True
            break
        if kind == "data":
            head += value

    async def rest() -> AsyncIterator[bytes]:
        if ended:
            return
        async for kind, _, value in events:
            if kind == "end":
                return
            if kind == "data":
                yield value

    return head, rest()


async def _prepend(head: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if head:
        yield head
    async for chunk in rest:
        yield chunk
