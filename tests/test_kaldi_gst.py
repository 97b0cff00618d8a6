"""kaldi-gstreamer-server compatibility, driven by KGS's own ``client.py`` (vendored in
``tests/kgs/``, run under Python 2.7 with ws4py 0.3.2 as its users run it), ``curl -T`` on the
HTTP endpoint, and raw sockets for the status socket and the wire details."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import connect

from protocol.common import ProtocolError
from protocol.kaldi_gst import AudioFormat, parse_caps
from tests.backends.conformance import FIXTURES
from tests.media import encode
from tests.media import wav_bytes as wav

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "tests" / "kgs" / "client.py"
PY27 = ROOT / ".venv" / "py27" / "bin" / "python"
JFK = FIXTURES["fw_jfk"]
LJ = FIXTURES["lj_LJ001-0001"]
TWO = FIXTURES["ep_lj001_0002_0003_pause2p5"]
CAPS = ("audio/x-raw, layout=(string)interleaved, rate=(int)16000, format=(string)S16LE, "
        "channels=(int)1")


def words(text: str) -> list[str]:
    return "".join(c for c in text.lower() if c.isalnum() or c.isspace()).split()


@pytest.fixture(scope="module")
def py27() -> Path:
    if not PY27.exists():
        if os.environ.get("STT_REQUIRE_PY27"):
            pytest.fail(f"{PY27} is missing: `make test` builds it from pyenv's Python 2.7")
        pytest.skip("no Python 2.7 environment with ws4py (make test builds .venv/py27)")
    return PY27


def run_client(py27: Path, server, path: Path, *args: str, timeout: float = 60):
    """``client.py -u ws://…/client/ws/speech [args] FILE``: (stdout, stderr, exit code)."""
    url = f"ws://127.0.0.1:{server.port}/client/ws/speech"
    done = subprocess.run([str(py27), str(CLIENT), "-u", url, *args, str(path)],
                          capture_output=True, timeout=timeout, text=True)
    return done.stdout.strip(), done.stderr, done.returncode


# -- client.py ----------------------------------------------------------------------------

def test_client_py_raw_pcm_with_caps_at_real_time(py27, whisper, tmp_path):
    """``.raw`` + ``-r 32000``: the client derives the caps from the rate and sends 8000 bytes
    every 250 ms (real time); stdout is the finals joined, printed once the server closes."""
    raw = tmp_path / "jfk.raw"
    raw.write_bytes(JFK.pcm().tobytes())
    out, err, code = run_client(py27, whisper, raw, "-r", "32000")
    assert code == 0, err
    assert words(out) == words(JFK.text), (out, err)


def test_client_py_wav_without_content_type_and_the_segments(py27, mock, tmp_path):
    """A WAV file: ``content-type=`` empty, the header in the first block; sniffed. Two
    utterances, two finals: ``segment`` 0 then 1 (checked on the wire below)."""
    path = tmp_path / "two.wav"
    path.write_bytes(wav(TWO.pcm()))
    out, err, code = run_client(py27, mock, path, "-r", "256000")
    assert code == 0, err
    assert words(out) == words(TWO.text), (out, err)


def test_client_py_ogg_opus(py27, whisper, tmp_path):
    path = tmp_path / "lj.ogg"
    path.write_bytes(encode(LJ.pcm(), "ogg_opus_48k_stereo"))
    out, err, code = run_client(py27, whisper, path, "-r", "64000")
    assert code == 0, err
    assert {"printing", "arts", "exhibition"} <= set(words(out)), (out, err)


def test_client_py_is_told_status_9_when_the_server_is_full(py27, start_server, tmp_path):
    server = start_server(max_sessions=1)
    path = tmp_path / "lj.raw"
    path.write_bytes(LJ.pcm().tobytes())

    async def hold_and_run():
        async with connect(server.ws_url()):  # the one slot
            return await asyncio.to_thread(run_client, py27, server, path, timeout=30)

    out, err, code = asyncio.run(hold_and_run())
    assert "Received error from server (status 9)" in err, err
    assert "server is full" in err and out == ""


def test_client_py_bad_caps_get_status_5_and_a_reason(py27, mock, tmp_path):
    path = tmp_path / "lj.raw"
    path.write_bytes(LJ.pcm().tobytes())
    _, err, _ = run_client(py27, mock, path, "--content-type",
                           "audio/x-raw, format=(string)S24BE, rate=(int)16000", timeout=30)
    assert "Received error from server (status 5)" in err
    assert "format S24BE is not supported" in err


# -- the wire -------------------------------------------------------------------------------

async def test_partials_then_one_final_per_segment_and_close_after_eos(mock):
    url = f"ws://127.0.0.1:{mock.port}/client/ws/speech?content-type={quote(CAPS)}"
    pcm = np.concatenate([TWO.pcm(), np.zeros(16000, np.int16)])
    async with connect(url) as ws:
        for i in range(0, pcm.size, 4000):
            await ws.send(pcm[i:i + 4000].tobytes())
        await ws.send(b"EOS")  # the HTTP path forwards EOS as binary: both are accepted
        messages = [json.loads(m) async for m in ws]  # ends when the server closes
    assert ws.close_code == 1000
    assert all(m["status"] == 0 and m["id"] == messages[0]["id"] for m in messages)
    assert "adaptation_state" in messages[-1]  # the last message, for the next session
    messages = messages[:-1]
    finals = [m for m in messages if m["result"]["final"]]
    assert [f["segment"] for f in finals] == [0, 1]
    for f in finals:  # partials of a segment come before its one final
        later = messages[messages.index(f) + 1:]
        assert not [m for m in later if m["segment"] == f["segment"]]
        best = f["result"]["hypotheses"][0]
        assert best["word-alignment"] and best["word-alignment"][0]["start"] >= 0
        assert f["segment-length"] > 0 and f["total-length"] >= f["segment-start"]
    said = " ".join(f["result"]["hypotheses"][0]["transcript"] for f in finals)
    assert words(said) == words(TWO.text)


async def test_n_best_hypotheses_from_kaldi(start_server):
    server = start_server(backend="kaldi")
    clip = FIXTURES["leopard_ko"]
    url = (f"ws://127.0.0.1:{server.port}/client/ws/speech?n_best=3&content-type="
           "audio/x-raw-int;rate=16000")
    async with connect(url) as ws:
        pcm = clip.pcm()
        for i in range(0, pcm.size, 8000):
            await ws.send(pcm[i:i + 8000].tobytes())
        await ws.send("EOS")
        messages = [json.loads(m) async for m in ws]
    finals = [m for m in messages if m.get("result", {}).get("final")]
    assert finals
    hypotheses = finals[0]["result"]["hypotheses"]
    assert len(hypotheses) > 1 and all("likelihood" in h for h in hypotheses)
    assert hypotheses[0]["transcript"] and "confidence" in hypotheses[0]


# -- HTTP and the status socket ------------------------------------------------------------

def test_http_recognize_with_curl_chunked_and_raw_caps(mock, tmp_path):
    path = tmp_path / "two.wav"
    path.write_bytes(wav(TWO.pcm()))
    url = f"{mock.http}/client/dynamic/recognize"
    done = subprocess.run(["curl", "-sS", "-T", str(path), "-H", "Transfer-Encoding: chunked",
                           url], capture_output=True, text=True, timeout=60)
    body = json.loads(done.stdout)
    assert body["status"] == 0 and body["id"]
    assert words(body["hypotheses"][0]["utterance"]) == words(TWO.text)
    raw = httpx.post(url, content=TWO.pcm().tobytes(),
                     headers={"Content-Type": "audio/x-raw-int; rate=16000"}, timeout=60)
    assert raw.status_code == 200
    assert raw.json()["hypotheses"][0]["utterance"] == body["hypotheses"][0]["utterance"]
    bad = httpx.put(url, content=b"\0" * 100, headers={"Content-Type": "audio/x-raw, rate=x"})
    assert bad.status_code == 400 and bad.json()["status"] == 5


def test_http_recognize_when_full_is_503_no_workers_available(start_server):
    server = start_server(max_sessions=1)

    async def hold():
        async with connect(server.ws_url()):
            return await asyncio.to_thread(
                httpx.put, f"{server.http}/client/dynamic/recognize", content=b"RIFF")

    r = asyncio.run(hold())
    assert r.status_code == 503 and r.text == "No workers available"


async def test_status_socket_follows_sessions_as_they_come_and_go(start_server):
    server = start_server(max_sessions=3)
    status_url = f"ws://127.0.0.1:{server.port}/client/ws/status"
    async with connect(status_url) as status:
        first = json.loads(await status.recv())
        assert first == {"num_workers_available": 3, "num_requests_processed": 0}
        async with connect(server.ws_url()):
            taken = json.loads(await asyncio.wait_for(status.recv(), 5))
            assert taken["num_workers_available"] == 2
        released = json.loads(await asyncio.wait_for(status.recv(), 5))
        assert released == {"num_workers_available": 3, "num_requests_processed": 1}


# -- caps ------------------------------------------------------------------------------------

def test_caps_parsing():
    assert parse_caps(CAPS) == AudioFormat("pcm_s16le", 16000, 1)
    assert parse_caps("") == AudioFormat()  # sniffed
    assert parse_caps("audio/ogg") == AudioFormat()
    assert parse_caps("audio/x-raw-int; rate=8000") == AudioFormat("pcm_s16le", 8000, 1)
    assert parse_caps("audio/x-raw, format=(string)F32LE, rate=(int)44100, channels=(int)2") \
        == AudioFormat("pcm_f32le", 44100, 2)
    assert parse_caps("audio/x-mulaw") == AudioFormat("mulaw", 8000, 1)
    for nonsense in ("audio/x-raw, rate=fast", "text/html", "audio/x-raw, garbage",
                     "audio/x-raw, layout=(string)non-interleaved",
                     "audio/x-raw, rate=(int)1000000"):
        with pytest.raises(ProtocolError):
            parse_caps(nonsense)



# -- adaptation state --------------------------------------------------------------------

def test_client_py_adaptation_state_round_trip(py27, mock, tmp_path):
    """``--save-adaptation-state`` keeps what the server sent last; ``--send-adaptation-state``
    sends it first thing in the next session, whose state then carries both sessions' text."""
    from protocol.adaptation import decode_state

    first, second = tmp_path / "first.wav", tmp_path / "second.wav"
    first.write_bytes(wav(LJ.pcm()))
    second.write_bytes(wav(TWO.pcm()))
    saved, resaved = tmp_path / "state.json", tmp_path / "state2.json"
    _, err, code = run_client(py27, mock, first, "-r", "256000",
                              "--save-adaptation-state", str(saved))
    assert code == 0 and saved.exists(), err
    carried = decode_state(json.loads(saved.read_text()))
    assert words(carried["context"]) == words(LJ.text)
    out, err, code = run_client(py27, mock, second, "-r", "256000",
                                "--send-adaptation-state", str(saved),
                                "--save-adaptation-state", str(resaved))
    assert code == 0 and "Received error" not in err, err
    assert words(out) == words(TWO.text)
    context = decode_state(json.loads(resaved.read_text()))["context"]
    assert words(context)[-3:] == words(TWO.text)[-3:], "the new text follows the old"
    assert "exhibition" in words(context) or len(context) == 600


def test_adaptation_context_changes_how_whisper_spells_the_next_session(whisper):
    """The carried context is Whisper's initial prompt: "woodcutters", written as one word in
    the earlier text, is written so again (without it tiny.en writes "wood cutters")."""
    from protocol.adaptation import encode_state
    from session.options import RecognitionOptions

    state = encode_state(RecognitionOptions(context="The woodcutters of the Netherlands "
                                            "worked the woodcuts."), [], "en", "test")

    async def transcribe(first: dict | None) -> list[dict]:
        url = f"ws://127.0.0.1:{whisper.port}/client/ws/speech?content-type={quote(CAPS)}"
        async with connect(url) as ws:
            if first is not None:
                await ws.send(json.dumps({"adaptation_state": first}))
            pcm = TWO.pcm()
            for i in range(0, pcm.size, 8000):
                await ws.send(pcm[i:i + 8000].tobytes())
            await ws.send("EOS")
            return [json.loads(m) async for m in ws]

    def text(messages: list[dict]) -> str:
        return " ".join(m["result"]["hypotheses"][0]["transcript"] for m in messages
                        if m.get("result", {}).get("final"))

    plain, adapted = asyncio.run(transcribe(None)), asyncio.run(transcribe(state))
    assert "wood cutters" in text(plain).lower(), text(plain)
    assert "woodcutters" in text(adapted).lower(), text(adapted)
    refused = asyncio.run(transcribe({"type": "string+gzip+base64", "value": "H4sIAAAA"}))
    assert refused[0]["status"] == 5 and "adaptation_state" in refused[0]["message"]
    assert text(refused) == text(plain), "a refused state changes nothing"


async def test_the_native_socket_carries_the_same_state(mock):
    from urllib.parse import quote as q

    from protocol.adaptation import decode_state
    from tests.client import stream

    first = await stream(mock.ws_url(adaptation="true", hotwords="Exhibition"), LJ.pcm())
    (message,) = first.of("adaptation_state")
    assert first.messages[-1] is message
    state = message["adaptation_state"]
    assert decode_state(state)["hotwords"] == ("Exhibition",)
    second = await stream(mock.ws_url(adaptation_state=q(state["value"])), TWO.pcm())
    carried = decode_state(second.of("adaptation_state")[0]["adaptation_state"])
    assert carried["hotwords"] == ("Exhibition",), "carried over from the first session"
    assert words(carried["context"])[:2] == words(LJ.text)[:2]
    assert not (await stream(mock.ws_url(), LJ.pcm())).of("adaptation_state")
    with pytest.raises(Exception) as refused:
        await stream(mock.ws_url(adaptation_state="bm90IGd6aXA="), LJ.pcm())
    assert "400" in str(refused.value)
