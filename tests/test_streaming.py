"""End to end: a real uvicorn, real WebSocket clients, real reference audio, the mock backend."""

import asyncio
import json

import numpy as np
import pytest
from websockets.asyncio.client import connect

from tests.backends.conformance import FIXTURES
from tests.client import Transcript, stream


def check_invariants(t: Transcript) -> None:
    msgs = t.messages
    assert msgs[0]["type"] == "ready"
    assert [m["seq"] for m in msgs] == list(range(1, len(msgs) + 1))
    open_segment = None
    finals_per_segment: dict[int, int] = {}
    for m in msgs:
        kind = m["type"]
        if kind == "speech_started":
            assert open_segment is None
            open_segment = m["segment_seq"]
        elif kind == "partial":
            assert m["segment_seq"] == open_segment, "partial outside its segment"
            assert m["final"] is False
        elif kind == "final":
            assert m["segment_seq"] == open_segment
            finals_per_segment[open_segment] = finals_per_segment.get(open_segment, 0) + 1
            open_segment = None
    assert open_segment is None, "a segment never got its final"
    assert set(finals_per_segment.values()) <= {1}
    assert sorted(finals_per_segment) == list(range(1, len(finals_per_segment) + 1))


async def test_realtime_stream_gets_partials_then_the_reference_text(server):
    clip = FIXTURES["ls_6930_75918_0000"]
    t = await stream(server.ws_url(), clip.pcm(), frame_ms=20, realtime=1.0)
    check_invariants(t)
    assert t.close_code == 1000
    ready = t.messages[0]
    assert (ready["backend"], ready["sample_rate"]) == ("mock", 16000)
    assert ready["session_id"]
    assert len(t.of("partial")) >= 2
    (final,) = t.of("final")
    assert final["text"] == clip.text
    assert final["words"] and all(0 <= w["confidence"] <= 1 for w in final["words"])
    assert 0 <= final["latency_ms"] < 1000 and final["first_token_ms"] is not None
    assert final["segment_duration_ms"] == final["end_ms"] - final["start_ms"]


@pytest.mark.parametrize("frame_ms", [20, 100, 1000])
async def test_fast_multi_segment_stream(server, frame_ms):
    clip = FIXTURES["ep_ls_three_turns_pause4"]
    t = await stream(server.ws_url(), clip.pcm(), frame_ms=frame_ms)
    check_invariants(t)
    assert t.close_code == 1000
    assert t.text == clip.text
    finals = t.of("final")
    assert len(finals) >= 3
    assert [f["reason"] for f in finals[:-1]] == ["endpoint"] * (len(finals) - 1)
    assert [f["start_ms"] for f in finals] == sorted(f["start_ms"] for f in finals)


async def test_eos_as_plain_text(server):
    clip = FIXTURES["ls_6930_75918_0000"]
    t = await stream(server.ws_url(), clip.pcm(), end="EOS")
    assert t.close_code == 1000 and t.text == clip.text
    assert t.of("final")[-1]["reason"] == "eos"


async def test_commit_finalizes_and_the_session_goes_on(server):
    clip = FIXTURES["lj_LJ001-0001"]
    pcm = clip.pcm().tobytes()
    half = len(pcm) // 2 // 3200 * 3200
    messages = []
    async with connect(server.ws_url(), max_size=None) as ws:
        for i in range(0, half, 3200):
            await ws.send(pcm[i : i + 3200])
        await ws.send(json.dumps({"type": "commit"}))
        while True:
            m = json.loads(await ws.recv())
            messages.append(m)
            if m["type"] == "final":
                break
        assert m["reason"] == "commit"
        for i in range(half, len(pcm), 3200):
            await ws.send(pcm[i : i + 3200])
        await ws.send(json.dumps({"type": "eos"}))
        async for raw in ws:
            messages.append(json.loads(raw))
        assert ws.close_code == 1000
    t = Transcript(messages)
    check_invariants(t)
    assert [f["reason"] for f in t.of("final")] == ["commit", "eos"]
    assert t.text == clip.text, "no word lost or repeated across the commit"


async def test_commit_in_silence_is_acknowledged_without_a_final_and_ping_gets_pong(server):
    async with connect(server.ws_url()) as ws:
        assert json.loads(await ws.recv())["type"] == "ready"
        await ws.send(np.zeros(1600, dtype=np.int16).tobytes())
        await ws.send(json.dumps({"type": "commit"}))
        await ws.send(json.dumps({"type": "ping"}))
        # The pong comes from the event loop, the acknowledgement from the inference thread:
        # either may be first.
        got = [json.loads(await ws.recv()) for _ in range(2)]
        assert sorted(m["type"] for m in got) == ["committed", "pong"]
        assert next(m for m in got if m["type"] == "committed")["segment_seq"] is None


async def test_per_session_silence_override_merges_segments(server):
    clip = FIXTURES["ep_lj001_0002_0003_pause2p5"]  # 2.5 s pause between two sentences
    default = await stream(server.ws_url(), clip.pcm())
    patient = await stream(server.ws_url(vad_silence_ms=3000), clip.pcm())
    assert len(default.of("final")) == 2
    assert len(patient.of("final")) == 1
    assert default.text == patient.text == clip.text


async def test_high_vad_threshold_hears_nothing(server):
    clip = FIXTURES["ls_6930_75918_0000"]
    t = await stream(server.ws_url(vad_threshold=32767), clip.pcm())
    assert t.of("speech_started") == [] and t.of("final") == []
    assert t.close_code == 1000


async def test_silence_and_noise_produce_no_words(server):
    for clip_id in ("gen_pinknoise_8s", "kgs_silence"):
        t = await stream(server.ws_url(), FIXTURES[clip_id].pcm())
        check_invariants(t)
        assert t.text == ""


async def test_concurrent_sessions_do_not_cross_talk(server):
    ids = ["ls_6930_75918_0000", "lj_LJ001-0001", "fw_jfk", "ep_lj001_0002_0003_pause2p5"] * 6
    results = await asyncio.gather(
        *(stream(server.ws_url(call_id=f"c{i}"), FIXTURES[c].pcm(), frame_ms=20)
          for i, c in enumerate(ids))
    )
    for clip_id, (i, t) in zip(ids, enumerate(results), strict=True):
        check_invariants(t)
        assert all(m["call_id"] == f"c{i}" for m in t.messages)
        assert t.text == FIXTURES[clip_id].text


async def test_disconnect_mid_stream_frees_everything(server):
    clip = FIXTURES["lj_LJ001-0001"]
    pcm = clip.pcm().tobytes()
    for _ in range(5):
        async with connect(server.ws_url()) as ws:
            await ws.recv()
            for i in range(0, len(pcm) // 2, 3200):
                await ws.send(pcm[i : i + 3200])
        # leaving the block closes the socket mid-segment
    ctx = server.ctx
    server.wait_for(lambda: len(ctx.slots) == 0 and ctx.backend.open_streams == 0)
    m = server.metrics()
    server.wait_for(lambda: server.metrics()["stt_sessions_total{outcome=\"disconnected\"}"] == 5)
    assert m["stt_active_sessions"] == 0


async def test_metrics_count_sessions_audio_and_latency(server):
    clip = FIXTURES["ep_ls_three_turns_pause4"]
    await stream(server.ws_url(), clip.pcm())
    await stream(server.ws_url(), clip.pcm(), frame_ms=20, end=None)
    server.wait_for(lambda: server.metrics().get("stt_sessions_total{outcome=\"disconnected\"}"))
    m = server.metrics()
    sent = 2 * clip.pcm().size / 16000
    assert m["stt_audio_received_seconds_total"] == pytest.approx(sent)
    dropped = sum(v for k, v in m.items() if k.startswith("stt_audio_dropped_seconds_total{"))
    assert m["stt_audio_processed_seconds_total"] + dropped == pytest.approx(sent)
    assert m["stt_sessions_total{outcome=\"completed\"}"] == 1
    assert m["stt_segments_total{reason=\"endpoint\"}"] >= 3
    assert m["stt_final_latency_seconds_count"] >= 4
    assert m["stt_first_partial_latency_seconds_count"] >= 3
    assert m["stt_inference_seconds_count{backend=\"mock\",kind=\"final\"}"] >= 4
    assert m["stt_max_sessions"] == server.settings.max_sessions
    assert m["stt_backend_ready{backend=\"mock\"}"] == 1
    assert m["stt_queue_depth{queue=\"input\"}"] == 0
    assert "process_resident_memory_bytes" in m
