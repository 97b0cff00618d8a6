"""The Qwen3-ASR backend through a real sttd: WebSocket clients → sessions → inference pool →
engine thread → (in-process fake engine | remote mode over real HTTP to a fake ``vllm
serve``). Only the GPU model is fake; everything of ours runs for real."""

from __future__ import annotations

import asyncio
import json

import pytest

from app import app_version
from backends.qwen3 import Qwen3Backend, Qwen3Options
from tests.client import stream
from tests.qwen3_fake import FakeEngine, FakeVllmServer, tone, words_of
from tests.server import BackgroundApp


@pytest.fixture
def fake_vllm():
    upstream = FakeVllmServer()
    with BackgroundApp(upstream.app()) as served:
        upstream.url = served.url
        upstream.served = served
        yield upstream


def qwen3_server(start_server, url: str, **overrides):
    return start_server(backend="qwen3", qwen3_remote_url=url, qwen3_tick_sec=0.5,
                        max_sessions=32, **overrides)


def test_remote_mode_streams_partials_and_finals(start_server, fake_vllm):
    server = qwen3_server(start_server, fake_vllm.url)
    status, body = server.get("/ready")
    assert status == 200 and json.loads(body)["engine"] == "ok"
    assert json.loads(body)["model"] == fake_vllm.model  # asked the server for its model
    assert server.metrics()[
        f'stt_build_info{{backend="qwen3",model="{fake_vllm.model}",version="{app_version()}"}}'
    ] == 1
    assert fake_vllm.requests, "no warm-up decode before ready"

    t = asyncio.run(stream(server.ws_url(), tone(3, 3.0), realtime=1.0, tail_silence_ms=800))
    assert t.close_code == 1000
    finals = t.of("final")
    assert [f["text"] for f in finals] == [words_of(3, 6)]
    assert finals[0]["language"] == "en" and 0 < finals[0]["confidence"] <= 1
    partials = [p["text"] for p in t.of("partial")]
    assert len(partials) >= 2 and all(words_of(3, 6).startswith(p) for p in partials)
    # Later ticks continue from a rollback prefix: an assistant turn the model continues.
    continued = [r for r in fake_vllm.requests if r.get("continue_final_message")]
    assert continued and all(r["add_generation_prompt"] is False for r in continued)
    assert not any("<mismatch>" in f["text"] for f in finals)
    m = server.metrics()
    assert m['stt_engine_decodes_total{kind="final",outcome="ok"}'] == 1
    assert m['stt_engine_decodes_total{kind="partial",outcome="ok"}'] >= 2
    assert m['stt_engine_decode_seconds_count{kind="final"}'] == 1
    assert m["stt_engine_decodes_in_flight"] == 0


def test_remote_mode_many_sessions_forced_language_and_hotwords(start_server, fake_vllm):
    server = qwen3_server(start_server, fake_vllm.url)

    async def main():
        return await asyncio.gather(*(
            stream(server.ws_url(language="de" if k % 2 else None,
                                 hotwords="Kubernetes" if k == 3 else None),
                   tone(k, 2.0), realtime=1.0, tail_silence_ms=800)
            for k in range(12)))

    results = asyncio.run(main())
    for k, t in enumerate(results):
        assert [f["text"] for f in t.of("final")] == [words_of(k, 4)], k
        assert t.of("final")[0]["language"] == ("de" if k % 2 else "en")
    forced = [r for r in fake_vllm.requests if r["messages"][-1]["role"] == "assistant"
              and r["messages"][-1]["content"].startswith("language German<asr_text>")]
    assert forced
    assert any(r["messages"][0]["content"] == "Kubernetes" for r in fake_vllm.requests)


def test_remote_engine_down_fails_readiness_and_sessions_cleanly(start_server, fake_vllm):
    server = qwen3_server(start_server, fake_vllm.url)
    fake_vllm.healthy = False
    status, body = server.get("/ready")
    assert status == 503 and "503" in json.loads(body)["engine"]
    assert server.metrics()['stt_backend_ready{backend="qwen3"}'] == 0
    fake_vllm.healthy = True
    fake_vllm.served.stop()  # the GPU tier is gone altogether
    status, body = server.get("/ready")
    assert status == 503 and json.loads(body)["engine"] != "ok"
    t = asyncio.run(stream(server.ws_url(), tone(1, 1.0), tail_silence_ms=800))
    errors = t.of("error")
    assert errors and errors[0]["code"] == "backend_error" and t.close_code == 1011
    assert server.get("/health")[0] == 200  # the server itself lives on


def test_in_process_engine_partials_arrive_when_decodes_land(start_server):
    engine = FakeEngine(base_s=0.15)
    backend = Qwen3Backend(engine, "fake", Qwen3Options(tick_sec=0.5))
    server = start_server(backend_impl=backend, max_sessions=64)

    async def main():
        return await asyncio.gather(*(
            stream(server.ws_url(), tone(k, 3.0), realtime=1.0, tail_silence_ms=800)
            for k in range(24)))

    results = asyncio.run(main())
    for k, t in enumerate(results):
        assert [f["text"] for f in t.of("final")] == [words_of(k, 6)], k
        assert len(t.of("partial")) >= 2
        for p in t.of("partial"):  # end_ms is the audio the decode had, not what came since
            assert abs(len(p["text"].split()) - (p["end_ms"] - p["start_ms"]) / 500) <= 1, p
    # One decode in flight per session, ever.
    per_stream: dict[str, list] = {}
    for c in engine.calls:
        stream_id, _, decode = c.request.request_id.rpartition("-")
        if decode.startswith("p"):
            per_stream.setdefault(stream_id, []).append(c)
    assert len(per_stream) == 24
    assert max(engine.max_overlap(calls) for calls in per_stream.values()) == 1
    assert not any(c.mismatch for c in engine.calls)


def test_disconnect_aborts_the_sessions_decode(start_server):
    engine = FakeEngine(base_s=10.0)
    backend = Qwen3Backend(engine, "fake", Qwen3Options(tick_sec=0.5, warmup=False))
    server = start_server(backend_impl=backend)
    asyncio.run(stream(server.ws_url(), tone(2, 1.0), realtime=1.0, end=None, wait_s=5))
    server.wait_for(lambda: engine.calls and engine.calls[-1].cancelled)
    server.wait_for(lambda: backend.open_streams == 0)
    m = server.metrics()
    assert m['stt_engine_decodes_total{kind="partial",outcome="aborted"}'] >= 1
    assert m["stt_engine_decodes_in_flight"] == 0
