"""The HAProxy agent-check responder: one line of free capacity per connection."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest
from websockets.asyncio.client import connect

from tests.server import RunningServer, drain, free_port
from transport.agent import agent_reply


def fake_ctx(*, free: int, limit: int = 8, ready: bool = True, draining: bool = False,
             alive: int = 1) -> SimpleNamespace:
    return SimpleNamespace(ready=ready, draining=draining, pool=SimpleNamespace(alive=alive),
                           slots=SimpleNamespace(free=free, limit=limit))


@pytest.mark.parametrize(("ctx", "line"), [
    (fake_ctx(free=8), "ready up 100%\n"),
    (fake_ctx(free=3), "ready up 37%\n"),
    (fake_ctx(free=1, limit=256), "ready up 1%\n"),  # a free slot never rounds to weight 0
    (fake_ctx(free=0), "ready up 0%\n"),  # full: UP, but no new sessions
    (fake_ctx(free=5, draining=True), "drain\n"),
    (fake_ctx(free=8, ready=False), "down\n"),
    (fake_ctx(free=8, alive=0), "down\n"),
])
def test_reply(ctx, line):
    assert agent_reply(ctx) == line


def ask(port: int) -> str:
    """What HAProxy's agent-check reads: connect, read to the close."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        chunks = []
        while chunk := s.recv(64):
            chunks.append(chunk)
    return b"".join(chunks).decode("ascii")


async def test_agent_follows_sessions_and_drain(start_server):
    agent = free_port()
    server = start_server(agent_port=agent, max_sessions=2, drain_timeout_sec=5)
    assert ask(agent) == "ready up 100%\n"
    async with connect(server.ws_url(call_id="a")) as first:
        await first.recv()  # ready: the slot is taken
        assert ask(agent) == "ready up 50%\n"
        async with connect(server.ws_url(call_id="b")) as second:
            await second.recv()
            assert ask(agent) == "ready up 0%\n"
            status, body = server.get("/ready")
            assert status == 503 and json.loads(body)["sessions"] == 2
        await asyncio.to_thread(server.wait_for, lambda: server.ctx.slots.free == 1)
        assert ask(agent) == "ready up 50%\n"
        drainer = threading.Thread(target=drain, args=(server, 5))
        drainer.start()
        await asyncio.to_thread(server.wait_for, lambda: server.ctx.draining)
        assert ask(agent) == "drain\n"
    drainer.join(10)


def retry_after_of_ready(server: RunningServer) -> tuple[int, str | None]:
    try:
        with urllib.request.urlopen(server.http + "/ready", timeout=5) as r:
            return r.status, r.headers["Retry-After"]
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Retry-After"]


def test_ready_503_carries_retry_after(start_server):
    server = start_server(max_sessions=1)
    assert retry_after_of_ready(server) == (200, None)
    server.ctx.slots.try_take(object())  # full: a slot frees within a session
    assert retry_after_of_ready(server) == (503, "1")
    server.ctx.draining = True  # draining: this replica takes nothing until it restarts
    assert retry_after_of_ready(server) == (503, "5")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_taken_agent_port_fails_the_start():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = RunningServer(agent_port=taken.getsockname()[1])
        with pytest.raises(RuntimeError, match="did not start"):
            server.start(timeout=10)
