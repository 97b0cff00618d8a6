"""Lossless ingest on a real server: a client faster than real time is slowed down by TCP
backpressure and loses nothing; only a live client the server cannot keep up with is shed
(tests/test_limits.py covers that side)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.backends.conformance import FIXTURES
from tests.client import stream

CLIP = FIXTURES["ep_lj001_0002_0003_pause2p5"]  # two segments


def finals(t) -> list[tuple[str, int, int]]:
    return [(m["text"], m["start_ms"], m["end_ms"]) for m in t.of("final")]


async def test_unpaced_clients_lose_nothing_and_match_the_paced_run(start_server):
    # A slow backend and a small buffer: unpaced clients are far ahead of it at once.
    server = start_server(mock_delay_ms=40, in_queue_ms=500, inference_threads=2)
    paced = await stream(server.ws_url(), CLIP.pcm(), frame_ms=100, realtime=4.0)
    assert paced.close_code == 1000 and paced.text == CLIP.text
    fast = await asyncio.gather(*(stream(server.ws_url(call_id=f"c{i}"), CLIP.pcm(),
                                         frame_ms=20) for i in range(8)))
    for t in fast:
        assert t.close_code == 1000 and not t.of("warning"), t.of("warning")
        assert finals(t) == finals(paced)
    m = server.metrics()
    assert m['stt_audio_dropped_seconds_total{reason="queue_full"}'] == 0
    assert m["stt_ingest_held_seconds_total"] > 0, "the socket was not read while full"
    server.wait_for(lambda: abs(server.metrics()["stt_audio_processed_seconds_total"]
                                - server.metrics()["stt_audio_received_seconds_total"]) < 1e-6)


async def test_a_held_client_is_not_idle(start_server):
    # Each backend call takes 1.5 s, longer than the idle timeout: the client's sends block
    # because the server does not read, which must not count as the client being silent.
    server = start_server(mock_delay_ms=1500, in_queue_ms=200, idle_timeout_sec=1.0,
                          inference_threads=1)
    t = await stream(server.ws_url(), FIXTURES["ls_6930_75918_0000"].pcm(), frame_ms=100)
    assert t.close_code == 1000, t.messages[-1]
    assert t.text == FIXTURES["ls_6930_75918_0000"].text


async def test_binary_eos_is_audio_on_the_native_protocol(server):
    """Three μ-law samples that spell EOS are audio; only text ends the stream."""
    url = server.ws_url(codec="mulaw", sample_rate=8000)
    t = await stream(url, b"EOS" * 10 + b"\xff" * 800 + b"EOS", frame_ms=20)
    assert t.close_code == 1000 and t.messages[-1]["type"] != "error"
    m = server.metrics()
    assert m["stt_audio_received_seconds_total"] == pytest.approx((30 + 800 + 3) / 8000, abs=1e-3)


async def test_commit_without_an_open_segment_is_acknowledged(server):
    import json

    from websockets.asyncio.client import connect

    async with connect(server.ws_url()) as ws:
        assert json.loads(await ws.recv())["type"] == "ready"
        await ws.send('{"type":"commit"}')
        ack = json.loads(await ws.recv())
        assert ack["type"] == "committed" and ack["segment_seq"] is None
        pcm = FIXTURES["ls_6930_75918_0000"].pcm().tobytes()
        await ws.send(pcm[: len(pcm) // 2])
        await ws.send('{"type":"commit"}')
        seen = []
        while not seen or seen[-1]["type"] != "committed":
            seen.append(json.loads(await ws.recv()))
        final = [m for m in seen if m["type"] == "final"]
        assert len(final) == 1 and final[0]["reason"] == "commit"
        assert seen[-1]["segment_seq"] == final[0]["segment_seq"]


def test_pings_from_a_client_that_does_not_read_queue_a_bounded_number_of_pongs(
        start_server):
    """JSON pings from a client that never reads: once the socket and the kernel's buffers
    are full, pongs would queue until slow_consumer (the probe: +29 MB). A bounded number
    waits; later pings go unanswered."""
    import threading

    from tests.test_connection import Reader, connect, frame, upgrade_request

    # A send timeout far beyond the test: on a loaded machine reading 200 000 pings can take
    # long enough for the default to end the session as a slow consumer, which is not what
    # this test is about.
    server = start_server(send_timeout_sec=600)
    sock = connect(server, rcvbuf=4096)
    sock.sendall(upgrade_request())
    assert Reader(sock).response()[0] == 101  # then never read again
    pings = frame(0x1, b'{"type":"ping"}') * 1000
    failed: list[BaseException] = []

    def send_all() -> None:
        try:
            for _ in range(200):
                sock.sendall(pings)
        except OSError as exc:  # the server closed the socket
            failed.append(exc)

    sender = threading.Thread(target=send_all, daemon=True)
    sender.start()  # 200 000 pings: far more pongs than any socket buffer holds
    sender.join(120)
    assert not sender.is_alive(), "the server stopped reading pings"
    assert not failed, f"the server closed the socket: {failed}"

    def depth() -> int:
        return max(slot.job.output_depth for slot in server.ctx.slots if slot.job is not None)

    def steady() -> bool:  # every ping read: the queue stops moving
        now = depth()
        time.sleep(0.3)
        return depth() == now

    # The server may still be reading the last pings (a loaded CI box pauses it for longer
    # than one steadiness window): first the queue fills to its bound, then it stops there.
    server.wait_for(lambda: depth() >= 900, timeout=60)
    server.wait_for(steady, timeout=30)
    assert 900 <= depth() <= 1001, depth()
    sock.close()
