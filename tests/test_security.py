"""Bearer-token auth, the WebSocket Origin allow-list and TLS, on a real uvicorn."""

from __future__ import annotations

import io
import json
import ssl
from types import SimpleNamespace
from urllib.parse import quote

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.backends.conformance import FIXTURES
from tests.client import stream

TOKENS = "s3cret-one,s3cret-two"
CLIP = FIXTURES["lj_LJ001-0001"]


@pytest.fixture
def secured(start_server):
    return start_server(auth_tokens=TOKENS)


async def refused_status(url: str, **kwargs) -> tuple[int, bytes, dict]:
    with pytest.raises(InvalidStatus) as err:
        async with connect(url, **kwargs):
            pass
    r = err.value.response
    return r.status_code, r.body, dict(r.headers)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"additional_headers": {"Authorization": "Bearer wrong"}},
     {"additional_headers": {"Authorization": "Basic czNjcmV0LW9uZQ=="}},
     {"additional_headers": {"Authorization": "Bearer "}},
     {"additional_headers": {"Authorization": "Bearer s3cret-one,s3cret-two"}}],
    ids=["none", "wrong", "basic-scheme", "empty", "the-whole-list"],
)
async def test_websocket_without_a_valid_token_gets_401_before_accept(secured, kwargs):
    status, body, headers = await refused_status(secured.ws_url(), **kwargs)
    assert status == 401 and b"unauthorized" in body
    assert headers.get("www-authenticate") == "Bearer"
    m = secured.metrics()
    assert m['stt_rejections_total{reason="unauthorized"}'] == 1
    assert m["stt_active_sessions"] == 0


@pytest.mark.parametrize("how", ["header", "query"])
async def test_each_configured_token_works_by_header_or_query(secured, how):
    for token in TOKENS.split(","):
        if how == "header":
            url, kwargs = secured.ws_url(), {"additional_headers":
                                             {"Authorization": f"Bearer {token}"}}
        else:
            url, kwargs = secured.ws_url(token=token), {}
        async with connect(url, **kwargs) as ws:
            assert '"ready"' in await ws.recv()


async def test_token_in_query_still_transcribes(secured):
    result = await stream(secured.ws_url(token="s3cret-two"), CLIP.pcm())
    assert result.text and result.close_code == 1000


async def test_batch_endpoint_needs_the_token_and_health_does_not(secured):
    async with httpx.AsyncClient(base_url=secured.http) as client:
        wav = CLIP.path.read_bytes()
        r = await client.post("/v1/stt/transcribe", content=wav,
                              headers={"Content-Type": "audio/wav"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = await client.post("/v1/stt/transcribe", content=wav,
                              headers={"Content-Type": "audio/wav",
                                       "Authorization": "Bearer s3cret-one"})
        assert r.status_code == 200 and r.json()["text"]
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200  # open by default


async def test_metrics_can_require_the_token(start_server):
    server = start_server(auth_tokens=TOKENS, metrics_auth=True)
    async with httpx.AsyncClient(base_url=server.http) as client:
        assert (await client.get("/metrics")).status_code == 401
        r = await client.get("/metrics", headers={"Authorization": "Bearer s3cret-one"})
        assert r.status_code == 200 and "stt_active_sessions" in r.text


async def test_origin_allow_list(start_server):
    server = start_server(allowed_origins="https://app.example.com")
    status, body, _ = await refused_status(server.ws_url(), origin="https://evil.example.com")
    assert status == 403 and b"forbidden_origin" in body
    async with connect(server.ws_url(), origin="https://app.example.com") as ws:
        assert '"ready"' in await ws.recv()
    async with connect(server.ws_url()) as ws:  # no Origin: not a browser, not origin-bound
        assert '"ready"' in await ws.recv()


async def test_tls_serves_wss_and_https(start_server, tls_files):
    ca, certfile, keyfile = tls_files
    server = start_server(ssl_certfile=certfile, ssl_keyfile=keyfile)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    assert server.ws_url().startswith("wss://")
    async with connect(server.ws_url(), ssl=client_ctx) as ws:
        assert '"ready"' in await ws.recv()
    async with httpx.AsyncClient(base_url=server.http, verify=client_ctx) as client:
        assert (await client.get("/health")).status_code == 200
    with pytest.raises(ssl.SSLError):  # a client that does not trust the CA is refused
        async with connect(server.ws_url(), ssl=ssl.create_default_context()):
            pass


async def test_metrics_auth_without_tokens_warns_at_start_and_stays_open(start_server,
                                                                          monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr("observability.logging.sys", SimpleNamespace(stderr=log))
    server = start_server(metrics_auth=True)  # no STT_AUTH_TOKENS: nothing to check against
    warnings = [r for r in map(json.loads, log.getvalue().splitlines())
                if r["event"] == "auth.metrics_open"]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning"
    assert "STT_AUTH_TOKENS" in warnings[0]["reason"]
    assert server.get("/metrics")[0] == 200
    log.truncate(0)
    start_server(auth_tokens=TOKENS, metrics_auth=True)
    assert "auth.metrics_open" not in log.getvalue()


@pytest.mark.parametrize("language", ["en\n", "auto\n", "en\r\n", "pt-BR\n", "\nen"])
async def test_a_language_with_a_line_break_is_refused(server, language):
    with pytest.raises(InvalidStatus) as err:
        async with connect(server.ws_url(language=quote(language))):
            pass
    assert err.value.response.status_code == 400
    assert b"language" in err.value.response.body
    async with httpx.AsyncClient(base_url=server.http) as client:
        r = await client.post("/v1/stt/transcribe", params={"language": language},
                              content=CLIP.path.read_bytes(),
                              headers={"Content-Type": "audio/wav"})
        assert r.status_code == 400 and "language" in r.json()["error"]["message"]
        r = await client.post("/v1/stt/transcribe", data={"language": language},
                              files={"file": ("clip.wav", CLIP.path.read_bytes())})
        assert r.status_code == 400 and "language" in r.json()["error"]["message"]
        r = await client.post("/v1/stt/transcribe", params={"language": language.strip()},
                              content=CLIP.path.read_bytes(),
                              headers={"Content-Type": "audio/wav"})
        assert r.status_code == 200
