"""Connection-level limits below the ASGI app (transport/connection.py), over raw sockets
against a real server: request head size and time, pending-connection caps, handshake
refusals that reach the client, early data, non-reading peers, fragment floods."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import inspect
import json
import os
import pickle
import socket
import ssl
import struct
import threading
import time
import urllib.parse

import psutil
import pytest
import uvicorn
import websockets
import websockets.http11
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.server import ServerProtocol

from config import Settings
from protocol.fields import MAX_HOTWORD_CHARS, MAX_HOTWORDS
from tests.backends.conformance import FIXTURES
from tests.client import stream
from tests.test_hostile import still_serves
from transport import connection
from transport.connection import HardenedWebSocketProtocol, pending_connections

CLIP = FIXTURES["ls_6930_75918_0000"]
WS_PATH = "/v1/stt/ws?call_id=conn&sample_rate=16000"


# -- raw socket helpers ----------------------------------------------------------------------


def connect(server, source: str = "127.0.0.1", rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((source, 0))
    s.connect(("127.0.0.1", server.port))
    s.settimeout(10)
    return s


def upgrade_request(path: str = WS_PATH, extra: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").encode()


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A masked client frame (zero mask key: the payload goes as is)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + b"\0\0\0\0" + payload


class Reader:
    """Buffered reads from a raw socket: an HTTP response head, then WebSocket frames."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        headers = {k.lower(): v for k, v in headers.items()}
        body = b""
        if "content-length" in headers:
            n = int(headers["content-length"])
            while len(self.buf) < n:
                self._more()
            body, self.buf = self.buf[:n], self.buf[n:]
        return int(lines[0].split()[1]), headers, body

    def frame(self) -> tuple[int, bytes]:
        while len(self.buf) < 2:
            self._more()
        b0, b1 = self.buf[0], self.buf[1]
        n, at = b1 & 0x7F, 2
        if n == 126:
            while len(self.buf) < 4:
                self._more()
            n, at = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            while len(self.buf) < 10:
                self._more()
            n, at = struct.unpack("!Q", self.buf[2:10])[0], 10
        while len(self.buf) < at + n:
            self._more()
        payload, self.buf = self.buf[at:at + n], self.buf[at + n:]
        return b0 & 0x0F, payload

    def messages(self) -> tuple[list[dict], int | None]:
        """Text messages until the close frame: (messages, close code)."""
        out = []
        while True:
            opcode, payload = self.frame()
            if opcode == 1:
                out.append(json.loads(payload))
            elif opcode == 8:
                return out, struct.unpack("!H", payload[:2])[0] if payload else None


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes (EOF or reset) within ``seconds``; reads are discarded."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            return True
    return False


def refused(sock: socket.socket, status: int) -> dict:
    """The response is ``status`` (a JSON error), and the server then closes."""
    got, headers, body = Reader(sock).response()
    assert got == status, (got, body)
    assert headers["connection"] == "close"
    assert closed_within(sock, 5)
    return json.loads(body)


def protocols(server, kind=WebSocketsSansIOProtocol) -> list:
    return [p for p in list(server._server.server_state.connections) if isinstance(p, kind)]


def rss() -> int:
    return psutil.Process().memory_info().rss


# -- the seam --------------------------------------------------------------------------------


def test_protocols_pickle_for_workers():
    options = connection.uvicorn_protocols(Settings(http_max_header_bytes=4096))
    again = pickle.loads(pickle.dumps(options))
    assert again["http"].keywords["limits"].max_header_bytes == 4096
    assert again["ws"].func is HardenedWebSocketProtocol


def _source_hash(fn) -> str:
    return hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()[:16]


def test_uvicorn_internals_we_rely_on():
    """transport/connection.py subclasses uvicorn 0.54.0's protocols and copies or replaces
    some of their methods. If this fails after an upgrade, re-read those methods in the new
    uvicorn/websockets and update connection.py (and the hashes here)."""
    assert uvicorn.__version__ == "0.54.0", "re-check transport/connection.py against uvicorn"
    assert websockets.__version__.startswith("17."), "re-check the websockets internals used"
    # Methods connection.py replaces or copies, unchanged since they were read.
    assert {
        "HttpToolsProtocol.data_received": _source_hash(HttpToolsProtocol.data_received),
        "HttpToolsProtocol.handle_websocket_upgrade":
            _source_hash(HttpToolsProtocol.handle_websocket_upgrade),
        "HttpToolsProtocol.on_header": _source_hash(HttpToolsProtocol.on_header),
        "WebSocketsSansIOProtocol.data_received":
            _source_hash(WebSocketsSansIOProtocol.data_received),
        "WebSocketsSansIOProtocol.handle_ping": _source_hash(WebSocketsSansIOProtocol.handle_ping),
        "WebSocketsSansIOProtocol.handle_cont": _source_hash(WebSocketsSansIOProtocol.handle_cont),
    } == EXPECTED_HASHES
    # Attributes and hooks used.
    for name in ("_unset_keepalive_if_required", "_should_upgrade", "_unsupported_upgrade_warning",
                 "send_400_response", "on_headers_complete", "on_message_complete"):
        assert callable(getattr(HttpToolsProtocol, name)), name
    for name in ("handle_events", "handle_parser_exception", "send_receive_event_to_app",
                 "pause_writing", "resume_writing", "send"):
        assert callable(getattr(WebSocketsSansIOProtocol, name)), name
    init = inspect.getsource(HttpToolsProtocol.__init__)
    for attr in ("self.timeout_keep_alive_task", "self.server_state", "self.cycle"):
        assert attr in init, attr
    init = inspect.getsource(WebSocketsSansIOProtocol.__init__)
    for attr in ("self.conn", "self.writable", "self.frames", "self.handshake_initiated",
                 "self.handshake_complete", "self.close_sent"):
        assert attr in init, attr
    assert "self.handshake_complete = True" in inspect.getsource(WebSocketsSansIOProtocol.send)
    assert "self.close_sent = True" in inspect.getsource(WebSocketsSansIOProtocol.send)
    # websockets: handshake limits are module globals read at parse time; frames are events.
    assert "read_line(MAX_LINE_LENGTH" in inspect.getsource(websockets.http11.parse_line)
    assert "range(MAX_NUM_HEADERS + 1)" in inspect.getsource(websockets.http11.parse_headers)
    proto = ServerProtocol()
    assert proto.events == [] and proto.parser_exc is None and proto.handshake_exc is None


EXPECTED_HASHES = {  # uvicorn 0.54.0
    "HttpToolsProtocol.data_received": "010a7ae59a5d3b1a",
    "HttpToolsProtocol.handle_websocket_upgrade": "179c4f769386ab89",
    "HttpToolsProtocol.on_header": "65d62c044f61fdbd",
    "WebSocketsSansIOProtocol.data_received": "c89d394077d8841d",
    "WebSocketsSansIOProtocol.handle_ping": "41bcf345d372c55c",
    "WebSocketsSansIOProtocol.handle_cont": "d96fe1479da61beb",
}


def test_websockets_limits_are_read_at_parse_time():
    connection.widen_websockets_limits(connection.Limits(max_header_bytes=65536, max_headers=100))
    path = "/?" + "a" * 60000
    proto = ServerProtocol()
    proto.receive_data(upgrade_request(path, "".join(f"X-{i}: v\r\n" for i in range(120))))
    [request] = proto.events_received()
    assert request.path == path and proto.handshake_exc is None


# -- F1: request head size -------------------------------------------------------------------


def test_huge_header_block_gets_431_and_memory_stays_flat(start_server):
    server = start_server()
    sock = connect(server)
    blob = b"v" * (64 << 10)
    sent = 0
    before = rss()

    def flood():  # a header value of 32 MB, or until the server closes
        nonlocal sent
        try:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: ")
            while sent < 32 << 20:
                sock.sendall(blob)
                sent += len(blob)
        except OSError:
            pass

    sender = threading.Thread(target=flood)
    sender.start()
    body = refused(sock, 431)
    sender.join(20)
    assert body["error"]["code"] == "bad_request" and "65536" in body["error"]["message"]
    assert sent >= 1 << 20  # the server read (and discarded) past the limit before closing
    assert rss() - before < 16 << 20  # unbounded buffering cost ~2.5x the bytes sent
    sock.close()


def test_one_mb_header_block_in_one_write_gets_431(start_server):
    server = start_server()
    sock = connect(server)
    lines = b"".join(b"X-Pad-%07d: %s\r\n" % (i, b"v" * 80) for i in range(10000))
    threading.Thread(target=lambda: sock.sendall(b"GET /health HTTP/1.1\r\n" + lines + b"\r\n"),
                     daemon=True).start()
    refused(sock, 431)


@pytest.mark.parametrize("path", ["/health?", WS_PATH + "&pad="])
def test_url_over_the_limit_gets_414(start_server, path):
    server = start_server()
    sock = connect(server)
    url = path + "x" * 100_000
    request = upgrade_request(url) if "ws" in path else f"GET {url} HTTP/1.1\r\n\r\n".encode()
    threading.Thread(target=lambda: sock.sendall(request), daemon=True).start()
    refused(sock, 414)
    assert refusals(server)["url_too_long"] == 1


@pytest.mark.parametrize("ws", [False, True], ids=["http", "websocket"])
def test_200_headers_get_431(start_server, ws):
    server = start_server()
    sock = connect(server)
    extra = "".join(f"X-Many-{i}: v\r\n" for i in range(200))
    sock.sendall(upgrade_request(extra=extra) if ws else
                 f"GET /health HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
    body = refused(sock, 431)
    assert "100 header lines" in body["error"]["message"]
    assert refusals(server)["too_many_headers"] == 1  # the HTTP parser counts first


def test_head_at_the_limit_is_served(start_server):
    server = start_server(http_max_header_bytes=4096)
    sock = connect(server)
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: "
    head += b"v" * (4096 - len(head) - 4) + b"\r\n\r\n"
    assert len(head) == 4096
    sock.sendall(head)
    assert Reader(sock).response()[0] == 200
    sock.close()
    sock = connect(server)
    sock.sendall(head[:-4] + b"v\r\n\r\n")
    refused(sock, 431)


def test_keep_alive_pipelining_and_bodies_still_work(server):
    sock = connect(server)
    reader = Reader(sock)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
    assert [reader.response()[0] for _ in range(3)] == [200, 200, 200]
    big = b"x" * 200_000  # a body bigger than the head limit is not a head
    sock.sendall(b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(big) + big)
    assert reader.response()[0] == 405
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reader.response()[0] == 200


# -- F4: handshakes the WebSocket layer refused ----------------------------------------------


def korean_hotwords_url(server) -> str:
    hot = ",".join("한" * (MAX_HOTWORD_CHARS - 1) + str(i % 10) for i in range(MAX_HOTWORDS))
    query = urllib.parse.urlencode({"call_id": "hw", "sample_rate": 16000, "hotwords": hot})
    return f"ws://127.0.0.1:{server.port}/v1/stt/ws?{query}"


async def test_valid_57kb_hotwords_url_gets_a_session(server):
    url = korean_hotwords_url(server)
    assert len(url) > 57_000
    result = await stream(url, CLIP.pcm())
    assert result.messages[0]["type"] == "ready"
    assert result.text == CLIP.text and result.close_code == 1000


def test_handshake_websockets_cannot_parse_gets_400(server):
    sock = connect(server)
    sock.sendall(upgrade_request(extra="Transfer-Encoding: chunked\r\n"))
    refused(sock, 400)
    assert refusals(server)["bad_handshake"] == 1


def refusals(server) -> dict[str, float]:
    """stt_connections_refused_total by reason, scraped from /metrics."""
    prefix = 'stt_connections_refused_total{reason="'
    return {k[len(prefix):-2]: v for k, v in server.metrics().items() if k.startswith(prefix)}


# -- F2: header timeout and pending connections ----------------------------------------------


def test_silent_and_trickling_sockets_are_closed_after_the_header_timeout(start_server):
    server = start_server(http_header_timeout_sec=1)
    silent = connect(server)
    trickle_http, trickle_ws = connect(server), connect(server)
    request = upgrade_request()
    started = time.monotonic()
    for i in range(8):  # one byte of each head every 0.25 s: 2 s, twice the timeout
        trickle_http.send(b"GET /health HTTP/1.1\r\n"[i:i + 1])
        trickle_ws.send(request[i:i + 1])
        time.sleep(0.25)
    assert closed_within(silent, 1)  # nothing sent: closed without a response
    assert time.monotonic() - started < 4
    for sock in (trickle_http, trickle_ws):
        sock.settimeout(5)
        body = refused(sock, 408)
        assert body["error"]["code"] == "request_timeout"
    assert server.get("/health")[0] == 200
    assert refusals(server)["head_timeout"] == 3


def test_keep_alive_request_head_is_timed_from_the_previous_response(start_server):
    server = start_server(http_header_timeout_sec=1)
    sock = connect(server)
    reader = Reader(sock)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reader.response()[0] == 200
    sock.sendall(b"GET /health HTTP/1.1\r\n")  # and the rest never comes
    assert reader.response()[0] == 408
    assert closed_within(sock, 5)


def test_pending_connection_caps(start_server):
    server = start_server(max_pending_connections=8, max_pending_connections_per_ip=4)
    table = pending_connections(server._server.server_state)
    held = [connect(server, "127.0.0.2") for _ in range(4)]
    held[0].send(b"GET /health HTTP/1.1\r\n")  # half a head counts the same as nothing
    server.wait_for(lambda: table.total == 4)
    # Over the per-address cap: 503 and closed at once; another address is served.
    body = refused(connect(server, "127.0.0.2"), 503)
    assert body["error"]["code"] == "capacity"
    assert server.get("/health")[0] == 200
    # Over the total cap: everyone waits for the held ones to go.
    held += [connect(server, "127.0.0.3") for _ in range(4)]
    server.wait_for(lambda: table.total == 8)
    refused(connect(server), 503)
    for sock in held:
        sock.close()
    server.wait_for(lambda: table.total == 0)
    assert server.get("/health")[0] == 200 and table.by_ip == {}
    assert refusals(server)["pending_cap"] == 2


async def test_fd_exhaustion_shape_is_bounded(start_server):
    """The probe's fd-exhaustion: many sockets that send half a request and stop. With a
    per-address cap they cannot lock out a normal client, and the timeout frees them."""
    server = start_server(max_pending_connections_per_ip=16, http_header_timeout_sec=1)
    held = []
    for _ in range(56):
        sock = connect(server, "127.0.0.2")
        try:
            sock.send(b"GET / HTTP/1.1\r\n")
        except OSError:
            pass
        held.append(sock)
    assert len(pending_connections(server._server.server_state).by_ip) <= 1
    await still_serves(server)
    assert all(closed_within(sock, 5) for sock in held)
    server.wait_for(lambda: pending_connections(server._server.server_state).total == 0, 5)


# -- F5: non-reading clients -----------------------------------------------------------------


def open_session(server, rcvbuf: int | None = None) -> tuple[socket.socket, Reader]:
    sock = connect(server, rcvbuf=rcvbuf)
    sock.sendall(upgrade_request())
    reader = Reader(sock)
    assert reader.response()[0] == 101
    opcode, payload = reader.frame()
    assert opcode == 1 and json.loads(payload)["type"] == "ready"
    return sock, reader


def test_ping_flood_from_a_non_reader_buffers_one_pong(server):
    sock, _ = open_session(server, rcvbuf=4096)
    [proto] = protocols(server)
    burst = frame(0x9, b"p" * 125) * 512
    before, peak, sent = rss(), 0, 0
    while sent < 32 << 20:  # 32 MB of pings, never reading a pong
        sock.sendall(burst)
        sent += len(burst)
        peak = max(peak, proto.transport.get_write_buffer_size())
    time.sleep(0.5)
    peak = max(peak, proto.transport.get_write_buffer_size())
    assert peak <= 128 << 10, peak  # the high-water mark (64 KiB), not what was sent
    assert rss() - before < 16 << 20
    sock.close()


async def test_zero_window_peer_is_released_after_the_server_closes(start_server):
    server = start_server(idle_timeout_sec=1)
    sock, _ = open_session(server, rcvbuf=4096)
    [proto] = protocols(server)
    # Fill the pipe to the client (pings read one by one: a pong each), then stop: the
    # session idles out, and its close frame cannot reach a client that never reads.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not proto.close_sent:
        try:
            sock.send(frame(0x9, b"p" * 125))
        except OSError:
            break
        await asyncio.sleep(0.0005)
    server.wait_for(lambda: proto.close_sent, 5)
    closed = time.monotonic()
    server.wait_for(lambda: proto.disconnected, 10)  # uvicorn alone: never (or 10 s + forever)
    assert time.monotonic() - closed < 6
    assert protocols(server) == []
    sock.close()
    await still_serves(server)


# -- early data and fragments ----------------------------------------------------------------


def test_frames_sent_with_the_handshake_are_kept(server):
    pcm = CLIP.pcm().tobytes()
    frames = b"".join(frame(0x2, pcm[i:i + 3200]) for i in range(0, len(pcm), 3200))
    sock = connect(server)
    sock.sendall(upgrade_request() + frames + frame(0x1, b'{"type":"eos"}'))
    reader = Reader(sock)
    assert reader.response()[0] == 101
    messages, code = reader.messages()
    assert messages[0]["type"] == "ready"
    assert " ".join(m["text"] for m in messages if m["type"] == "final") == CLIP.text
    assert code == 1000


def test_ping_sent_with_the_handshake_is_answered_after_the_101(server):
    sock = connect(server)
    sock.sendall(upgrade_request() + frame(0x9, b"early"))
    reader = Reader(sock)
    assert reader.response()[0] == 101
    got = [reader.frame() for _ in range(2)]  # ready and the pong, in either order
    assert (0xA, b"early") in got
    sock.close()


def test_invalid_frame_sent_with_the_handshake_gets_400(server):
    sock = connect(server)
    sock.sendall(upgrade_request() + b"\x82\x05hello")  # unmasked: a protocol error
    refused(sock, 400)


async def test_fragment_flood_is_parsed_in_turns(server):
    pcm = CLIP.pcm().tobytes()
    head, tail = pcm[:32000], pcm[32000:]
    flood = frame(0x2, head[:2], fin=False)
    flood += b"".join(frame(0x0, head[i:i + 2], fin=False) for i in range(2, len(head) - 2, 2))
    flood += frame(0x0, head[-2:])
    assert len(flood) == 16000 * 8
    sock = connect(server)
    sock.sendall(upgrade_request())
    reader = Reader(sock)
    assert reader.response()[0] == 101
    [proto] = protocols(server)
    sock.sendall(flood + b"".join(frame(0x2, tail[i:i + 3200]) for i in range(0, len(tail), 3200))
                 + frame(0x1, b'{"type":"eos"}'))
    messages, code = reader.messages()
    assert " ".join(m["text"] for m in messages if m["type"] == "final") == CLIP.text
    assert code == 1000
    assert proto.budget_turns > 0  # 16 000 frames did not go through in one loop turn
    await still_serves(server)


async def test_slow_consumer_socket_is_released(start_server):
    """The probe's json-ping-flood-nonreader: JSON pings whose pongs are never read. The app
    ends the session (slow_consumer) and uvicorn closes the transport, whose buffer never
    drains; the connection is aborted instead of being held until the peer leaves."""
    server = start_server(send_timeout_sec=1)
    sock, _ = open_session(server, rcvbuf=4096)
    [proto] = protocols(server)
    ping = frame(0x1, b'{"type":"ping"}')
    sent = time.monotonic()
    try:
        while not proto.transport.is_closing() and time.monotonic() - sent < 20:
            sock.sendall(ping * 256)
    except OSError:
        pass
    closing = time.monotonic()
    server.wait_for(lambda: proto.disconnected, 10)  # uvicorn alone: not before the peer leaves
    assert time.monotonic() - closing < 6
    sock.close()
    await still_serves(server)


def test_over_tls_refusals_reach_the_client_and_early_data_is_kept(start_server, tls_files):
    ca, certfile, keyfile = tls_files
    server = start_server(ssl_certfile=certfile, ssl_keyfile=keyfile)
    context = ssl.create_default_context()
    ca.configure_trust(context)

    def tls() -> ssl.SSLSocket:
        return context.wrap_socket(connect(server), server_hostname="127.0.0.1")

    sock = tls()
    sock.sendall(upgrade_request(extra="".join(f"X-Many-{i}: v\r\n" for i in range(200))))
    refused(sock, 431)
    sock = tls()
    lines = b"".join(b"X-Pad-%07d: %s\r\n" % (i, b"v" * 1000) for i in range(1000))
    sock.sendall(b"GET /health HTTP/1.1\r\n" + lines)  # read and discarded after the 431
    refused(sock, 431)
    pcm = CLIP.pcm().tobytes()
    sock = tls()
    sock.sendall(upgrade_request() + b"".join(frame(0x2, pcm[i:i + 3200])
                                              for i in range(0, len(pcm), 3200))
                 + frame(0x1, b'{"type":"eos"}'))
    reader = Reader(sock)
    assert reader.response()[0] == 101
    messages, code = reader.messages()
    assert " ".join(m["text"] for m in messages if m["type"] == "final") == CLIP.text
    assert code == 1000
