"""What sttd writes to its log, read back from a real server's stderr: no credentials, no
false errors for refused handshakes, and every exception with its type, message and stack."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from types import SimpleNamespace

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from observability.logging import configure_logging, redact
from tests.backends.conformance import FIXTURES
from tests.client import stream
from tests.server import RunningServer

TOKEN = "s3cret-one"
CLIP = FIXTURES["ls_6930_75918_0000"]


@pytest.fixture
def log_output(monkeypatch) -> io.StringIO:
    """The stream ``configure_logging`` (called by ``create_app``) writes to. Patched where it
    is read: pytest sets ``sys.stderr`` again at the start of each test phase."""
    buf = io.StringIO()
    monkeypatch.setattr("observability.logging.sys", SimpleNamespace(stderr=buf))
    return buf


def records(buf: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.startswith("{")]


async def refused(url: str, **kwargs) -> int:
    with pytest.raises(InvalidStatus) as err:
        async with connect(url, **kwargs):
            pass
    return err.value.response.status_code


@pytest.mark.parametrize("level", ["info", "warning"])
async def test_refused_handshakes_log_no_token_and_no_error(start_server, log_output, level):
    server = start_server(auth_tokens=TOKEN, max_sessions=1, log_level=level)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    # a valid token in the query, refused for another reason each time
    assert await refused(server.ws_url(sample_rate=96000, token=TOKEN)) == 400
    assert await refused(server.ws_url(token=TOKEN),
                         additional_headers={"Authorization": "Bearer wrong"}) == 401
    async with connect(server.ws_url(), additional_headers=bearer) as ws:
        assert '"ready"' in await ws.recv()
        assert await refused(server.ws_url(token=TOKEN, api_key=TOKEN)) == 503
    await asyncio.sleep(0.5)  # uvicorn logs its handshake error after the response is out

    text = log_output.getvalue()
    assert TOKEN not in text
    logged = records(log_output)
    assert len(logged) == len(text.splitlines()), "every line is JSON"
    assert [r for r in logged if r["level"] in ("error", "critical")] == []
    refusals = [r["event"] for r in logged if '"WebSocket /v1/stt/ws' in r["event"]]
    if level == "info":  # refusals stay visible, at info, with the query redacted
        assert [e.rsplit(" ", 1)[-1] for e in refusals] == ["400", "401", "503"]
        assert all("token=[redacted]" in e for e in refusals)
        assert "api_key=[redacted]" in refusals[-1] and "sample_rate=96000" in refusals[0]
        assert {r["level"] for r in logged if r["event"] in refusals} == {"info"}
    else:
        assert refusals == []


async def test_a_handshake_the_app_never_answers_is_still_an_error(log_output):
    async def silent(scope, receive, send):  # returns without accepting or refusing: a bug
        await receive()

    server = RunningServer(log_level="warning")
    server.app.mount("/v1/test", silent)  # raw ASGI: Starlette's routes close for the app
    server.start()
    try:
        assert await refused(server.ws_url("/v1/test/silent")) == 500
        await asyncio.sleep(0.3)
    finally:
        server.stop()
    errors = [r["event"] for r in records(log_output) if r["level"] == "error"]
    assert errors == ["ASGI callable returned without completing handshake."]


@pytest.mark.parametrize(
    "text",
    ["GET /v1/stt/ws?call_id=a&access_token=SECRET&apiKey=SECRET&key=SECRET&sample_rate=8000",
     "{'authorization': 'Bearer SECRET', 'host': 'x'}", "[(b'authorization', b'Basic SECRET')]",
     "Authorization: Bearer SECRET", '{"client_secret": "SECRET"}', "password=SECRET"],
)
def test_redaction(text):
    out = redact(text)
    assert "SECRET" not in out and "[redacted]" in out
    assert "call_id=a" in out if "call_id" in text else True


def raising_backend(server, where: str):
    """Make the mock's streams raise a plain bug (not a BackendError) in ``where``."""
    backend = server.ctx.backend
    open_stream = backend.open_stream

    def opener(options):
        s = open_stream(options)

        def kaboom(*args):
            raise RuntimeError("kaboom in the model")

        setattr(s, where, kaboom)
        return s

    backend.open_stream = opener


def broken_gate(server):
    def authorised(headers, query, credentials=()):
        raise LookupError("the gate fell over")

    server.ctx.gate.authorised = authorised


async def provoke_errors(server) -> None:
    """One exception logged by sttd (structlog), two by uvicorn (stdlib): HTTP and WebSocket."""
    raising_backend(server, "finalize")
    result = await stream(server.ws_url(), CLIP.pcm())
    assert result.close_code == 1011 and result.messages[-1]["code"] == "internal_error"
    broken_gate(server)
    async with httpx.AsyncClient(base_url=server.http) as client:
        r = await client.post("/v1/stt/transcribe", content=b"RIFF",
                              headers={"Content-Type": "audio/wav"})
        assert r.status_code == 500
    assert await refused(server.ws_url()) == 500
    await asyncio.sleep(0.3)


async def test_json_logs_carry_every_exception_with_its_stack(start_server, log_output):
    server = start_server(log_level="warning")
    await provoke_errors(server)
    logged = records(log_output)
    (failed,) = [r for r in logged if r["event"] == "inference.session_failed"]
    (exc,) = failed["exception"]
    assert exc["exc_type"] == "RuntimeError" and exc["exc_value"] == "kaboom in the model"
    assert exc["frames"][-1]["name"] == "kaboom" and len(exc["frames"]) >= 2
    assert all("locals" not in f for f in exc["frames"])  # locals may hold secrets or audio
    uvicorn = [r for r in logged if r["event"].startswith("Exception in ASGI application")]
    assert len(uvicorn) == 2  # the batch request and the WebSocket handshake
    for record in uvicorn:
        chain = record["exception"]
        assert chain[-1]["exc_type"] == "LookupError", chain
        assert chain[-1]["exc_value"] == "the gate fell over"
        assert chain[-1]["frames"][-1]["name"] == "authorised"


async def test_console_logs_carry_a_plain_traceback(start_server, log_output):
    server = start_server(log_level="warning", log_json=False)
    await provoke_errors(server)
    text = log_output.getvalue()
    assert text.count("Traceback (most recent call last):") >= 3
    assert "RuntimeError: kaboom in the model" in text
    assert text.count("LookupError: the gate fell over") >= 2
    assert "inference.session_failed" in text and "exc_info" not in text


def test_configuring_twice_keeps_one_filter():
    configure_logging("info", json=True)
    configure_logging("warning", json=True)
    assert len(logging.getLogger("uvicorn.error").filters) == 1
    assert logging.getLogger("uvicorn.error").level == logging.INFO
