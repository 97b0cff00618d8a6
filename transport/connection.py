"""Connection-level limits below the ASGI app: sttd's uvicorn protocol classes.

What stock uvicorn (0.54.0: httptools HTTP, ``websockets-sansio`` WebSocket) leaves open, and
what these subclasses add:

- **Request head size** (httptools has no limit): at most ``http_max_header_bytes`` bytes and
  ``http_max_headers`` header lines, else ``431`` (``414`` when the request line alone is over)
  and the connection closes. The bytes are counted in ``data_received`` before httptools sees
  them, so nothing past the limit is buffered. One comparison per read: httptools stays.
- **Request head time**: the first head must be complete ``http_header_timeout_sec`` after the
  connection opened (``408`` when part of it arrived, else a silent close). On keep-alive,
  uvicorn's keep-alive timeout (5 s) bounds the wait for the next head's first byte, and the
  head is then timed from that byte. This covers WebSocket handshakes: the upgrade is a
  request head like any other.
- **Pending connections**: at most ``max_pending_connections`` connections that have not
  completed their first request head, ``max_pending_connections_per_ip`` per client address
  (per worker process); over the cap a new connection gets ``503`` and is closed at once.
- **Refusals reach the client**: the status is written, the write side is shut, and what the
  client still sends is read and discarded for up to ``_LINGER_SEC`` before the close, so the
  client's own unsent bytes do not turn the close into a reset that destroys the response.
  Handshakes that websockets' own parser refuses (uvicorn's sansio protocol never writes its
  response) are answered too; websockets' line and header-count limits are raised to at least
  the HTTP limits, so valid parameters (100 hotwords of 64 characters, percent-encoded) fit.
- **Early data**: bytes that arrive with the upgrade request (frames sent before the 101) are
  handed to the WebSocket protocol instead of being dropped.
- **Non-reading peers**: pongs are coalesced (RFC 6455 5.5.3: answering only the latest ping is
  allowed) and held back while the transport's write buffer is over its high-water mark, so a
  ping flood from a client that never reads buffers one pong. Once the server has closed (or
  sent its WebSocket close frame), a connection whose write buffer stops draining for
  ``_STALL_SEC`` is aborted: ``transport.close()`` alone waits forever on a zero-window peer.
- **Frame floods**: WebSocket data is parsed in ``_FEED_SLICE``-byte slices and, after
  ``_FRAME_BUDGET`` frames in one event-loop turn, reading pauses until the next turn, so one
  client sending tiny fragments cannot hold the loop for a whole 256 KiB read. Fragments are
  joined into one buffer, not kept as a list of small objects.

Every limit is read from :class:`config.Settings` (``uvicorn_protocols`` binds them with
``functools.partial``, which pickles for ``--workers``). The internals these classes use are
checked by ``tests/test_connection.py::test_uvicorn_internals_we_rely_on``; it fails loudly
when a uvicorn or websockets upgrade changes them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import struct
import time
from dataclasses import dataclass
from typing import Any

import httptools
import websockets.http11
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import HeaderLineTooLong, RequestLineTooLong, TooManyHeaders

from config import Settings

logger = logging.getLogger("uvicorn.error")

# Refused request heads: how long what the client still sends is read and discarded before
# the close (nginx's lingering close), so the response is not lost to a TCP reset.
_LINGER_SEC = 2.0
# A closing connection (or a WebSocket whose close frame is sent) with unsent bytes (in the
# transport's buffer or the kernel's send queue) that have not shrunk for this long is
# aborted; one that has not closed after _CLOSING_MAX_SEC (a TLS shutdown that never
# completes) too.
_STALL_SEC = 3.0
_WATCH_STEP_SEC = 0.5
_CLOSING_MAX_SEC = 30.0
# WebSocket input is parsed in slices of this many bytes; after _FRAME_BUDGET frames in one
# event-loop turn the rest waits for the next turn (websockets parses a frame in ~5 us).
_FEED_SLICE = 4096
_FRAME_BUDGET = 512
# The first byte of an unmasked, unfragmented pong: how a pong is told from other writes.
_PONG = b"\x8a"
# What a line of the replayed handshake may exceed the original by (``name: value``).
_REPLAY_SLACK = 64
_CAP_WARNING_EVERY_SEC = 10.0
try:  # Linux: bytes in a socket's send queue
    import fcntl
    import termios

    _TIOCOUTQ: int | None = termios.TIOCOUTQ
except (ImportError, AttributeError):  # pragma: no cover - not Linux
    _TIOCOUTQ = None


@dataclass(frozen=True)
class Limits:
    header_timeout: float = 10.0
    max_header_bytes: int = 65536
    max_headers: int = 100
    max_pending: int = 1024
    max_pending_per_ip: int = 64

    @classmethod
    def from_settings(cls, s: Settings) -> Limits:
        return cls(s.http_header_timeout_sec, s.http_max_header_bytes, s.http_max_headers,
                   s.max_pending_connections, s.max_pending_connections_per_ip)


@functools.cache
def _environment_limits() -> Limits:
    """For protocol classes built without ``limits`` (the environment's settings)."""
    return Limits.from_settings(Settings())


def widen_websockets_limits(limits: Limits) -> None:
    """websockets refuses request lines or header lines over ``MAX_LINE_LENGTH`` (8192) and
    more than ``MAX_NUM_HEADERS`` (128) headers; both are module globals of
    ``websockets.http11`` read at parse time. Raise them (never lower) to the HTTP limits, so
    every head the HTTP layer lets through is accepted by the handshake parser."""
    line = limits.max_header_bytes + _REPLAY_SLACK
    if websockets.http11.MAX_LINE_LENGTH < line:
        websockets.http11.MAX_LINE_LENGTH = line
    if websockets.http11.MAX_NUM_HEADERS < limits.max_headers:
        websockets.http11.MAX_NUM_HEADERS = limits.max_headers


def uvicorn_protocols(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config``: the HTTP and WebSocket protocol classes.
    Values must pickle (``--workers`` spawns processes): module-level classes or names."""
    limits = Limits.from_settings(settings)
    widen_websockets_limits(limits)
    return {
        "http": functools.partial(HardenedHttpToolsProtocol, limits=limits),
        "ws": functools.partial(HardenedWebSocketProtocol, limits=limits),
    }


# -- pending connections ---------------------------------------------------------------------


class PendingConnections:
    """Connections of one server (one ``ServerState``) that have not completed their first
    request head. Used on that server's event loop only."""

    __slots__ = ("total", "by_ip", "refused", "_warned_at")

    def __init__(self) -> None:
        self.total = 0
        self.by_ip: dict[str, int] = {}
        self.refused = 0
        self._warned_at = 0.0

    def admit(self, ip: str, limits: Limits) -> bool:
        n = self.by_ip.get(ip, 0)
        if self.total >= limits.max_pending or n >= limits.max_pending_per_ip:
            self.refused += 1
            now = time.monotonic()
            if now - self._warned_at >= _CAP_WARNING_EVERY_SEC:
                self._warned_at = now
                logger.warning(
                    "Connections refused: %d waiting for their request headers (cap %d), "
                    "%d from one address (cap %d); %d refused so far.",
                    self.total, limits.max_pending, n, limits.max_pending_per_ip, self.refused)
            return False
        self.total += 1
        self.by_ip[ip] = n + 1
        return True

    def release(self, ip: str) -> None:
        self.total -= 1
        n = self.by_ip[ip] - 1
        if n:
            self.by_ip[ip] = n
        else:
            del self.by_ip[ip]


# Where the app's lifespan leaves its metrics in uvicorn's lifespan state, which uvicorn hands
# every protocol instance as ``app_state`` (before start-up ends, nothing is counted).
METRICS_STATE_KEY = "sttd.metrics"
REFUSAL_REASONS = ("pending_cap", "head_timeout", "url_too_long", "head_too_large",
                   "too_many_headers", "bad_handshake")


def count_refusal(app_state: dict[str, Any], reason: str) -> None:
    metrics = app_state.get(METRICS_STATE_KEY)
    if metrics is not None:
        metrics.connections_refused.labels(reason).inc()


def pending_connections(server_state: Any) -> PendingConnections:
    table = getattr(server_state, "sttd_pending", None)
    if table is None:
        table = PendingConnections()
        server_state.sttd_pending = table
    return table


# -- the transport seen by uvicorn's protocols -----------------------------------------------

_READ_ASGI = 1  # uvicorn's own flow control (pause_reading / resume_reading)
_READ_BUDGET = 2  # the frame budget of this event-loop turn is spent


class GuardedTransport(asyncio.Transport):
    """The real transport, as uvicorn's protocols see it. Reading is paused while any reason
    holds it (uvicorn's own and the frame budget), and once the connection is closing (or its
    WebSocket close frame is sent) a write buffer that stops draining gets it aborted."""

    __slots__ = ("_t", "_loop", "_read_holds", "_lost", "_watch", "_watch_size", "_stalled",
                 "_closing_since")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._t = transport
        self._loop = loop
        self._read_holds = 0
        self._lost = False
        self._watch: asyncio.TimerHandle | None = None
        self._watch_size = 0
        self._stalled = 0.0
        self._closing_since: float | None = None

    # asyncio.Transport, passed through
    def write(self, data: Any) -> None:
        self._t.write(data)

    def writelines(self, list_of_data: Any) -> None:
        self._t.writelines(list_of_data)

    def write_eof(self) -> None:
        self._t.write_eof()

    def can_write_eof(self) -> bool:
        return self._t.can_write_eof()

    def abort(self) -> None:
        self._t.abort()

    def is_closing(self) -> bool:
        return self._t.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._t.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._t.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._t.get_protocol()

    def is_reading(self) -> bool:
        return self._t.is_reading()

    def get_write_buffer_size(self) -> int:
        return self._t.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._t.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._t.set_write_buffer_limits(high, low)

    # reading, paused while any reason holds it
    def pause_reading(self) -> None:
        self.hold_reading(_READ_ASGI)

    def resume_reading(self) -> None:
        self.release_reading(_READ_ASGI)

    def hold_reading(self, reason: int) -> None:
        before = self._read_holds
        self._read_holds |= reason
        if not before:
            self._t.pause_reading()

    def release_reading(self, reason: int) -> None:
        if self._read_holds & reason:
            self._read_holds &= ~reason
            if not self._read_holds:
                self._t.resume_reading()

    # closing
    def close(self) -> None:
        self._t.close()
        self.watch(closing=True)

    def watch(self, closing: bool) -> None:
        """Abort the connection if its write buffer stops draining: the peer is not reading
        (a zero TCP window), and nothing the server still has to say can reach it."""
        if self._lost:
            return
        if closing and self._closing_since is None:
            self._closing_since = self._loop.time()
        if self._watch is None:
            self._watch_size = self._unsent()
            self._stalled = 0.0
            self._watch = self._loop.call_later(_WATCH_STEP_SEC, self._tick)

    def _tick(self) -> None:
        self._watch = None
        if self._lost:
            return
        size = self._unsent()
        stalled = size and size >= self._watch_size
        self._stalled = self._stalled + _WATCH_STEP_SEC if stalled else 0.0
        self._watch_size = size
        since = self._closing_since
        if self._stalled >= _STALL_SEC or (
                since is not None and self._loop.time() - since >= _CLOSING_MAX_SEC):
            logger.info("Connection aborted after its close: %d bytes unsent, none taken by "
                        "the peer for %g s.", size, self._stalled)
            self._t.abort()
            return
        self._watch = self._loop.call_later(_WATCH_STEP_SEC, self._tick)

    def _unsent(self) -> int:
        """Bytes not yet taken by the peer: the transport's buffer and the kernel's send
        queue (with a zero window the kernel holds what the transport handed it)."""
        size = self._t.get_write_buffer_size()
        sock = self._t.get_extra_info("socket")
        if sock is not None and _TIOCOUTQ is not None:
            try:
                size += struct.unpack("i", fcntl.ioctl(sock.fileno(), _TIOCOUTQ, b"\0" * 4))[0]
            except (OSError, ValueError, TypeError):
                pass
        return size

    def connection_lost(self) -> None:
        """Called by the protocol: the real transport is gone."""
        self._lost = True
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None


def _guarded(transport: Any, loop: asyncio.AbstractEventLoop) -> GuardedTransport:
    if isinstance(transport, GuardedTransport):
        return transport
    return GuardedTransport(transport, loop)


def _error_response(status: int, code: str, message: str,
                    default_headers: list[tuple[bytes, bytes]],
                    extra: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = [STATUS_LINE[status]]
    for name, value in (*default_headers, *extra, (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()), (b"connection", b"close")):
        head += [name, b": ", value, b"\r\n"]
    head += [b"\r\n", body]
    return b"".join(head)


class _Refused(Exception):
    """Raised from a parser callback to stop httptools; the status is on the protocol."""


# -- HTTP ------------------------------------------------------------------------------------


class HardenedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded, timed request head, a cap on pending
    connections, early data kept on upgrade, and refusals that reach the client."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *,
                 limits: Limits | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits = limits or _environment_limits()
        self._max_head = limits.max_header_bytes
        self._max_headers = limits.max_headers
        self._pending_ip: str | None = None  # set while counted as pending
        self._head_timer: asyncio.TimerHandle | None = None
        self._in_head = True  # the next bytes belong to a request head
        self._head_bytes = 0  # bytes of the current head received so far
        self._heads = 0  # request heads completed on this connection
        self._refusal: tuple[int, str] | None = None
        self._refused = False

    # connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        super().connection_made(_guarded(transport, self.loop))
        ip = self.client[0] if self.client else ""
        if not pending_connections(self.server_state).admit(ip, self.limits):
            self._refused = True
            count_refusal(self.app_state, "pending_cap")
            self.transport.write(_error_response(
                503, "capacity", "too many connections are waiting for their request headers",
                self.server_state.default_headers, ((b"retry-after", b"1"),)))
            self.transport.close()
            return
        self._pending_ip = ip
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._not_pending()
        self._cancel_head_timer()
        self.transport.connection_lost()  # type: ignore[attr-defined]
        super().connection_lost(exc)

    def _not_pending(self) -> None:
        if self._pending_ip is not None:
            pending_connections(self.server_state).release(self._pending_ip)
            self._pending_ip = None

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    # input

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after a refusal: read and discard
        self._unset_keepalive_if_required()
        if self._in_head:
            if len(data) > self._max_head - self._head_bytes:
                self._over_the_limit(data)
                return
            self._head_bytes += len(data)
        if not self._feed(data):
            return
        # A head has started and is not complete: time it. The first one is timed from the
        # connection's opening; on keep-alive, uvicorn's keep-alive timeout bounded the wait
        # for this first byte.
        if self._in_head and self._head_bytes and self._head_timer is None:
            self._time_head()

    def _feed(self, data: bytes, upto: int | None = None) -> bool:
        """uvicorn's data_received (0.54.0) on ``data[:upto]``, keeping every byte after an
        upgrade request (all of ``data``: frames sent early); False when the connection was
        handed on (upgrade) or refused."""
        try:
            self.parser.feed_data(data if upto is None else data[:upto])
        except httptools.HttpParserUpgrade as exc:
            self._upgrade_or_warn(data[exc.args[0]:])
            return False
        except httptools.HttpParserError:
            self._parser_error()
            return False
        return True

    def _over_the_limit(self, data: bytes) -> None:
        """This read takes the head past the limit, unless the head ends in it."""
        room = self._max_head - self._head_bytes
        heads = self._heads
        self._head_bytes += room
        if not self._feed(data, upto=room):
            return
        if self._heads == heads:  # still in the same head, and it is over the limit
            self._refuse_head_too_large()
            return
        # The head ended within the limit; the rest is its body (and maybe the next request,
        # counted from its next read).
        try:
            self.parser.feed_data(data[room:])
        except httptools.HttpParserUpgrade as exc:
            self._upgrade_or_warn(data[room + exc.args[0]:])
        except httptools.HttpParserError:
            self._parser_error()

    def _upgrade_or_warn(self, trailing: bytes) -> None:
        if self._should_upgrade():
            self.handle_websocket_upgrade(trailing)
        else:
            self._unsupported_upgrade_warning()

    def _parser_error(self) -> None:
        if self._refusal is not None:
            self._refuse(*self._refusal, reason="too_many_headers")
        else:
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)

    def _time_head(self) -> None:
        if not self._refused and not self.transport.is_closing():
            self._head_timer = self.loop.call_later(self.limits.header_timeout,
                                                    self._head_timeout)

    def _refuse_head_too_large(self) -> None:
        limit = self.limits.max_header_bytes
        # The request line alone (method, URL, version) is over the limit: 414.
        url = getattr(self, "url", b"")  # set by uvicorn's on_message_begin
        if not self.headers and len(url) + len("OPTIONS  HTTP/1.1\r\n") >= limit:
            self._refuse(414, f"request line over {limit} bytes", reason="url_too_long")
        else:
            self._refuse(431, f"request head over {limit} bytes", reason="head_too_large")

    # parser callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's on_header (0.54.0), inlined (it runs for every header), with a count.
        headers = self.headers
        if len(headers) >= self._max_headers:
            self._refusal = (431, f"more than {self.limits.max_headers} header lines")
            raise _Refused
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._heads += 1
        if self._head_timer is not None:
            self._cancel_head_timer()
        if self._pending_ip is not None:
            self._not_pending()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self._refused or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A request is being answered (the late head is a pipelined one): the next read
            # re-arms the timer, and uvicorn's keep-alive timeout follows the response.
            return
        if self.timeout_keep_alive_task is not None:
            return  # idle keep-alive: uvicorn's keep-alive timeout closes it
        if self._head_bytes:
            self._refuse(408, f"request headers not complete after "
                              f"{self.limits.header_timeout:g} s", code="request_timeout",
                         reason="head_timeout")
        else:
            self._refused = True
            count_refusal(self.app_state, "head_timeout")
            self.transport.close()

    # refusals

    def _refuse(self, status: int, message: str, *, reason: str,
                code: str = "bad_request") -> None:
        """Answer ``status``, stop writing, and discard what the client still sends for up
        to ``_LINGER_SEC`` before the close."""
        if self._refused:
            return
        self._refused = True
        count_refusal(self.app_state, reason)
        self._cancel_head_timer()
        self._unset_keepalive_if_required()
        self.logger.info("Request refused: %d %s.", status, message)
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(_error_response(status, code, message, self.server_state.default_headers))
        if transport.can_write_eof():
            try:
                transport.write_eof()
            except (OSError, RuntimeError):  # pragma: no cover - the peer is already gone
                transport.close()
                return
        self.loop.call_later(_LINGER_SEC, transport.close)

    # upgrade, keeping early data

    def handle_websocket_upgrade(self, trailing: bytes = b"") -> None:  # type: ignore[override]
        """uvicorn's upgrade (0.54.0), plus the bytes that came after the request head in the
        same read: frames a client sent before the 101."""
        self.connections.discard(self)
        method = self.scope["method"].encode()
        output = [method, b" ", self.url, b" HTTP/1.1\r\n"]
        for name, value in self.scope["headers"]:
            output += [name, b": ", value, b"\r\n"]
        output.append(b"\r\n")
        if trailing:
            output.append(trailing)
        protocol = self.ws_protocol_class(  # type: ignore[call-arg, misc]
            config=self.config,
            server_state=self.server_state,
            app_state=self.app_state,
        )
        protocol.connection_made(self.transport)
        protocol.data_received(b"".join(output))
        self.transport.set_protocol(protocol)


# -- WebSocket -------------------------------------------------------------------------------


class HardenedWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol with handshake refusals that are written, bounded
    pongs, a per-turn frame budget, joined fragments, and an abort for peers that do not
    read after the close."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *,
                 limits: Limits | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits or _environment_limits()
        widen_websockets_limits(self.limits)
        self._owed_pong: bytes | None = None
        self._backlog = b""
        self._budget_handle: asyncio.Handle | None = None
        self.budget_turns = 0  # reads whose frames were parsed over more than one loop turn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(_guarded(transport, self.loop))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport.connection_lost()  # type: ignore[attr-defined]
        if self._budget_handle is not None:
            self._budget_handle.cancel()
            self._budget_handle = None
        self._backlog = b""
        super().connection_lost(exc)

    # input

    def data_received(self, data: bytes) -> None:
        if self._budget_handle is not None:
            self._backlog += data  # read while paused (a TLS record): parse it in turn
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        conn = self.conn
        frames = 0
        pos, end = 0, len(data)
        while True:
            chunk = data if end <= _FEED_SLICE else data[pos:pos + _FEED_SLICE]
            pos += len(chunk)
            conn.receive_data(chunk)
            if conn.parser_exc is not None:
                if conn.close_sent is None:  # an invalid frame sent before the 101
                    self._refuse_handshake(invalid=True)
                else:
                    self.handle_parser_exception()
                return
            if not self.handshake_initiated and conn.handshake_exc is not None:
                self._refuse_handshake()
                return
            frames += len(conn.events)
            self.handle_events()
            if pos >= end or self.transport.is_closing():
                return
            if frames >= _FRAME_BUDGET:
                self.budget_turns += 1
                self._backlog = data[pos:]
                self.transport.hold_reading(_READ_BUDGET)  # type: ignore[attr-defined]
                self._budget_handle = self.loop.call_soon(self._next_turn)
                return

    def _next_turn(self) -> None:
        self._budget_handle = None
        data, self._backlog = self._backlog, b""
        if data and not self.transport.is_closing():
            self._feed(data)
        if self._budget_handle is None:
            self.transport.release_reading(_READ_BUDGET)  # type: ignore[attr-defined]

    def _refuse_handshake(self, invalid: bool = False) -> None:
        """websockets refused the request (line too long, too many headers, not parseable):
        it queued its response (or, for a request it cannot parse, only an EOF), but uvicorn
        writes output only from its event handlers, so nothing was ever sent. Answer with
        the status websockets chose, as sttd's JSON error, then close."""
        self.conn.data_to_send()  # websockets' plain-text response and EOF: replaced below
        if self.handshake_complete:  # a response (101 or a denial) is already written
            self.transport.close()
            return
        exc = self.conn.handshake_exc
        if invalid:
            status, message = 400, "invalid WebSocket frame before the handshake completed"
        elif isinstance(exc, RequestLineTooLong):
            status, message = 414, f"request line over {websockets.http11.MAX_LINE_LENGTH} bytes"
        elif isinstance(exc, (HeaderLineTooLong, TooManyHeaders)):
            status, message = 431, str(exc)
        else:
            status, message = 400, "not a valid WebSocket handshake request"
        self.handshake_initiated = self.handshake_complete = self.close_sent = True
        count_refusal(self.app_state, "bad_handshake")
        self.logger.info("WebSocket handshake refused: %d %s.", status, message)
        self.transport.write(_error_response(status, "bad_request", message,
                                             self.default_headers))
        self.transport.close()

    def handle_cont(self, event: Any) -> None:
        # One growing buffer per fragmented message, not a list of (possibly 1-byte) objects.
        frames = self.frames
        if len(frames) == 1 and type(frames[0]) is bytearray:
            frames[0] += event.data
        else:
            self.frames = [bytearray(b"".join(frames)) + event.data]
        if event.fin:
            self.frames = [bytes(self.frames[0])]
            self.send_receive_event_to_app()

    # pongs: only the latest ping is answered, and only while the peer reads

    def handle_ping(self) -> None:
        output = self.conn.data_to_send()
        pongs = [i for i, chunk in enumerate(output) if chunk[:1] == _PONG]
        if not pongs:
            self.transport.write(b"".join(output))
            return
        last = pongs[-1]
        if len(pongs) < len(output):
            # A close frame (or the end) follows: answer the latest ping before it, unless
            # the 101 is not written yet (a ping sent with the handshake, then a close).
            keep = last if self.handshake_complete else -1
            self._owed_pong = None
            self.transport.write(b"".join(c for i, c in enumerate(output)
                                          if c[:1] != _PONG or i == keep))
        elif self.handshake_complete and self.writable.is_set() and not self.close_sent:
            self._owed_pong = None
            self.transport.write(output[last])
        else:  # owed until the peer reads again (or the 101 is written)
            self._owed_pong = output[last]

    def _flush_pong(self) -> None:
        pong, self._owed_pong = self._owed_pong, None
        if pong and not self.close_sent and not self.transport.is_closing():
            self.transport.write(pong)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._owed_pong is not None and self.handshake_complete:
            self._flush_pong()

    async def send(self, message: Any) -> None:
        handshake_was_complete, close_was_sent = self.handshake_complete, self.close_sent
        await super().send(message)
        if (not handshake_was_complete and self.handshake_complete and self._owed_pong
                and self.writable.is_set()):
            self._flush_pong()  # a ping that came with the handshake
        if not close_was_sent and self.close_sent:
            # Close frame sent; uvicorn waits up to 10 s for the peer's reply. A peer that
            # does not read will not reply: abort once the write buffer stops draining.
            self.transport.watch(closing=False)  # type: ignore[attr-defined]
