"""Reading a transcription upload as it arrives: a raw ``audio/*`` body or a multipart form
whose ``file`` part is streamed (python-multipart's push parser, so nothing is spooled), with
the size limit enforced while reading, never after."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from protocol.common import ProtocolError
from session.events import ErrorCode

_RAW_TYPES = ("audio/", "video/", "application/octet-stream", "application/ogg")
_MAX_FIELD_BYTES = 8192
_SNIFF_BYTES = 12  # an MP4/M4A file says "ftyp" in bytes 4–8


@dataclass
class FilePart:
    chunks: AsyncIterator[bytes]
    is_mp4: bool


async def iter_upload(request: Request, max_bytes: int, fields: dict[str, str],
                      idle_timeout_s: float = 30.0) -> AsyncIterator[FilePart]:
    """Yields the one audio part; form fields found before it are merged into ``fields``
    (after it: only ``response_format`` may still change)."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise _too_large(max_bytes)
    media_type, options = parse_options_header(request.headers.get("content-type"))
    media = media_type.decode("latin-1").lower()
    body = _limited(request.stream(), max_bytes, idle_timeout_s)
    if media == "multipart/form-data":
        boundary = options.get(b"boundary")
        if not boundary:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "multipart body without a boundary")
        events = _multipart_events(body, boundary)
    elif media.startswith(_RAW_TYPES):
        events = _raw_events(body)
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
            fields[name] = value
        elif kind == "file":
            if seen_file:
                raise ProtocolError(ErrorCode.BAD_REQUEST, "send one file per request")
            seen_file = True
            head, rest = await _sniff(events)
            yield FilePart(_prepend(head, rest), is_mp4=head[4:8] == b"ftyp")


async def _limited(stream: AsyncIterator[bytes], max_bytes: int,
                   idle_timeout_s: float) -> AsyncIterator[bytes]:
    """The body's chunks; refused once over ``max_bytes``, or when the client goes quiet
    mid-upload (a slowloris holds a session slot otherwise)."""
    total = 0
    chunks = aiter(stream)
    while True:
        try:
            chunk = await asyncio.wait_for(anext(chunks), idle_timeout_s)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise ProtocolError(ErrorCode.UPLOAD_TIMEOUT,
                                f"upload sent nothing for {idle_timeout_s:g} s") from None
        total += len(chunk)
        if total > max_bytes:
            raise _too_large(max_bytes)
        if chunk:
            yield chunk


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
        "on_part_end": on_part_end,
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
