"""The external full-results post-processor (``STT_POSTPROCESSOR``) with real programs: one
that writes number words as digits, one that hangs, one that answers garbage, one that
crashes once; on the native socket, on kaldi-gstreamer-server's socket and on the batch
endpoint, with real speech through the mock backend."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

from tests.backends.conformance import FIXTURES
from tests.client import stream
from tests.media import wav_bytes as wav

PROGRAM = Path(__file__).resolve().parent / "postprocess" / "program.py"
TURNS = FIXTURES["ep_ls_three_turns_pause4"]  # "IT WAS THE FIRST GREAT SORROW …"
LJ = FIXTURES["lj_LJ001-0001"]


def program(mode: str, *args: str) -> str:
    return " ".join([sys.executable, str(PROGRAM), mode, *args])


async def test_every_final_is_rewritten_by_one_shared_program(start_server):
    server = start_server(postprocessor=program("digits"))
    results = await asyncio.gather(*(stream(server.ws_url(call_id=f"c{i}"), TURNS.pcm())
                                     for i in range(3)))
    for t in results:
        finals = [f for f in t.of("final") if f["text"]]
        assert finals[0]["text"].startswith("IT WAS THE 1st GREAT SORROW"), finals[0]["text"]
        assert [w["word"] for w in finals[0]["words"]][:4] == ["IT", "WAS", "THE", "1st"]
        assert not t.of("warning")
    assert server.ctx.metrics.postprocess_time._sum.get() > 0


async def test_a_hung_program_delays_a_final_by_its_timeout_at_most(start_server):
    server = start_server(postprocessor=program("hang"), postprocessor_timeout_sec=0.5)
    started = time.monotonic()
    a, b = await asyncio.gather(stream(server.ws_url(call_id="a"), LJ.pcm()),
                                stream(server.ws_url(call_id="b"), LJ.pcm()))
    took = time.monotonic() - started
    for t in (a, b):
        (warning,) = t.of("warning")
        assert warning["code"] == "postprocessor_failed" and "0.5 s" in warning["message"]
        assert t.text == LJ.text, "sent as the backend gave it"
    # b queued behind a on the one program: its deadline counts the queueing too
    assert took < 4, took
    failures = server.ctx.metrics.postprocess_failures.labels("timeout")._value.get()
    assert failures == 2


async def test_garbage_and_a_crash_fail_only_that_final_and_the_program_restarts(
        start_server, tmp_path):
    server = start_server(postprocessor=program("garbage"))
    t = await stream(server.ws_url(), LJ.pcm())
    assert t.of("warning")[0]["code"] == "postprocessor_failed" and t.text == LJ.text
    crashing = start_server(postprocessor=program("crash-once", str(tmp_path / "crashed")))
    first = await stream(crashing.ws_url(), TURNS.pcm())
    finals = [f["text"] for f in first.of("final") if f["text"]]
    assert len(first.of("warning")) == 1 and "exited" in first.of("warning")[0]["message"]
    assert "FIRST" in finals[0], "the final that met the crash went out unprocessed"
    assert all("FIRST" not in f for f in finals[1:])
    second = await stream(crashing.ws_url(), TURNS.pcm())
    assert [f["text"] for f in second.of("final") if f["text"]][0].startswith(
        "IT WAS THE 1st")
    assert not second.of("warning")


async def test_kgs_socket_and_batch_endpoint_get_rewritten_finals(start_server):
    server = start_server(postprocessor=program("digits"))
    url = f"ws://127.0.0.1:{server.port}/client/ws/speech?content-type="
    async with connect(url) as ws:
        data = wav(TURNS.pcm())
        for i in range(0, len(data), 32000):
            await ws.send(data[i:i + 32000])
        await ws.send("EOS")
        messages = [json.loads(m) async for m in ws]
    finals = [m for m in messages if m.get("result", {}).get("final")]
    best = finals[0]["result"]["hypotheses"][0]
    assert best["transcript"].startswith("IT WAS THE 1st")
    assert best["word-alignment"][3]["word"] == "1st"
    async with httpx.AsyncClient(timeout=60) as client:
        r = await client.post(f"{server.http}/v1/stt/transcribe", content=wav(TURNS.pcm()),
                              headers={"Content-Type": "audio/wav"})
    assert r.json()["text"].startswith("IT WAS THE 1st")
