"""Deepgram's API on ``/v1/listen``, driven by the real ``deepgram-sdk`` (sync and async
clients, ``DeepgramClientEnvironment`` pointed at a real uvicorn): live streaming with interim
results, endpointing, utterance end, VAD events, ``Finalize``, ``KeepAlive`` and
``CloseStream``; pre-recorded from bytes and from a chunked iterator; auth, refusals and bad
input. Every server message is validated against the SDK's own models (strictly: the SDK's
lenient parsing would hide a missing field)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time

import httpx
import numpy as np
import pytest
from deepgram import AsyncDeepgramClient, DeepgramClient, DeepgramClientEnvironment
from deepgram.core.api_error import ApiError
from deepgram.core.events import EventType
from deepgram.errors import BadRequestError
from deepgram.listen.v1.types import (
    ListenV1CloseStream,
    ListenV1Finalize,
    ListenV1KeepAlive,
    ListenV1Metadata,
    ListenV1Results,
    ListenV1SpeechStarted,
    ListenV1UtteranceEnd,
)
from deepgram.types import ListenV1Response
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from protocol.common import ProtocolError
from protocol.deepgram import ListenParams, _skip_wav_header, parse_listen, plain
from tests.backends.conformance import FIXTURES
from tests.media import g711
from tests.media import wav_bytes as wav

JFK = FIXTURES["fw_jfk"]
LJ = FIXTURES["lj_LJ001-0001"]
TWO = FIXTURES["ep_lj001_0002_0003_pause2p5"]
MODELS = {"Results": ListenV1Results, "Metadata": ListenV1Metadata,
          "SpeechStarted": ListenV1SpeechStarted, "UtteranceEnd": ListenV1UtteranceEnd}
KEY = "dg-test"


def words(text: str) -> list[str]:
    return "".join(c for c in text.lower() if c.isalnum() or c.isspace() or c == "'").split()


def environment(server) -> DeepgramClientEnvironment:
    ws = server.http.replace("http", "ws", 1)
    return DeepgramClientEnvironment(base=server.http, production=ws, agent=ws,
                                     agent_rest=server.http)


def sdk(server, **kwargs) -> DeepgramClient:
    return DeepgramClient(api_key=kwargs.pop("api_key", KEY), environment=environment(server),
                          **kwargs)


def strict(message):
    """The SDK's model of a message, validated (not merely constructed) from what it got."""
    assert message is not None, "the SDK could not tell what this message was"
    assert not isinstance(message, bytes), "JSON must come as text frames"
    raw = message.model_dump(by_alias=True, exclude_unset=True)
    return MODELS[raw["type"]].model_validate(raw)


class Live:
    """A sync-client session: messages collected by the SDK's listening thread."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.messages: list = []
        self.errors: list = []
        conn.on(EventType.MESSAGE, self.messages.append)
        conn.on(EventType.ERROR, self.errors.append)
        self.thread = threading.Thread(target=conn.start_listening, daemon=True)
        self.thread.start()

    def send(self, pcm: np.ndarray, *, chunk_ms: int = 100, speed: float | None = 8.0) -> None:
        step = 16 * chunk_ms
        for i in range(0, pcm.size, step):
            self.conn.send_media(pcm[i:i + step].tobytes())
            if speed:
                time.sleep(chunk_ms / 1000 / speed)

    def of(self, kind: str) -> list:
        return [m for m in self.messages if getattr(m, "type", None) == kind]

    def wait_for(self, predicate, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert predicate(), [getattr(m, "type", m) for m in self.messages]

    def finals(self) -> list[ListenV1Results]:
        return [m for m in self.of("Results") if m.is_final]


def refused_with(exc: BaseException) -> int:
    """The handshake status the SDK reports. It maps the old websockets ``InvalidStatusCode``
    to ``ApiError``; under websockets 14+ (sttd pins 17) the new ``InvalidStatus`` escapes
    unmapped, with the same status."""
    if isinstance(exc, ApiError):
        return exc.status_code
    assert isinstance(exc, InvalidStatus), exc
    return exc.response.status_code


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(16000 * seconds), np.int16)


# -- live, with Whisper on real speech -----------------------------------------------------

def test_live_interim_endpointing_utterance_end_and_vad_events(whisper):
    pcm = np.concatenate([TWO.pcm(), silence(1.6)])
    sent = pcm.tobytes()
    with sdk(whisper).listen.v1.connect(
            model="nova-3", encoding="linear16", sample_rate=16000, interim_results=True,
            endpointing=300, utterance_end_ms=1000, vad_events=True, punctuate=True,
            language="en-US", keyterm=["Chinese"], tag="test") as conn:
        live = Live(conn)
        live.send(pcm)
        live.wait_for(lambda: len(live.of("UtteranceEnd")) >= 1 and live.finals())
        conn.send_close_stream(ListenV1CloseStream(type="CloseStream"))
        live.thread.join(30)
    assert not live.errors, live.errors
    messages = [strict(m) for m in live.messages]
    kinds = [m.type for m in messages]
    assert kinds[-1] == "Metadata" and kinds.count("Metadata") == 1, kinds
    finals = [m for m in messages if m.type == "Results" and m.is_final]
    interims = [m for m in messages if m.type == "Results" and not m.is_final]
    assert interims, "interim_results=true gives interim Results"
    assert all(not m.speech_final and not m.from_finalize for m in interims)
    spoken = [f for f in finals if f.channel.alternatives[0].transcript]
    assert len(spoken) >= 3 and all(f.speech_final for f in spoken), kinds
    assert words(" ".join(f.channel.alternatives[0].transcript for f in spoken))[:3] == [
        "in", "being", "comparatively"]
    # each segment opens with SpeechStarted; every Results names channel 0 of 1
    assert kinds.index("SpeechStarted") < kinds.index("Results")
    assert kinds.count("SpeechStarted") >= len(spoken)
    for m in messages:
        if m.type == "Results":
            assert m.channel_index == [0, 1] and m.metadata.request_id
            alt = m.channel.alternatives[0]
            for w in alt.words:  # times inside their result's window
                assert m.start - 0.001 <= w.start <= w.end <= m.start + m.duration + 0.001
                assert w.word == plain(w.word) and w.punctuated_word
    # the 2.5 s pause in the clip ends the first utterance, the trailing silence the last;
    # UtteranceEnd comes after the final it closes and names where its last word ended
    ends = [m for m in messages if m.type == "UtteranceEnd"]
    assert len(ends) >= 2 and all(e.channel == [0, 1] for e in ends)
    first_end = kinds.index("UtteranceEnd")
    before = [m for m in messages[:first_end] if m.type == "Results" and m.is_final
              and m.channel.alternatives[0].words]
    assert abs(ends[0].last_word_end - before[-1].channel.alternatives[0].words[-1].end) < 1e-3
    meta = messages[-1]
    assert meta.sha256 == hashlib.sha256(sent).hexdigest()
    assert meta.request_id == finals[0].metadata.request_id
    assert abs(meta.duration - pcm.size / 16000) < 0.05 and meta.channels == 1


def test_finalize_mid_speech_flushes_from_finalize_and_the_stream_goes_on(whisper):
    pcm = JFK.pcm()
    cut = 16000 * 2  # inside "and so my fellow americans"
    with sdk(whisper).listen.v1.connect(model="nova-3", encoding="linear16",
                                        sample_rate=16000, endpointing=False,
                                        punctuate=True) as conn:
        live = Live(conn)
        live.send(pcm[:cut])
        conn.send_finalize(ListenV1Finalize(type="Finalize"))
        live.wait_for(lambda: live.finals())
        (flushed,) = live.finals()
        assert flushed.from_finalize and not flushed.speech_final
        assert words(flushed.channel.alternatives[0].transcript)[:2] == ["and", "so"]
        conn.send_keep_alive(ListenV1KeepAlive(type="KeepAlive"))
        live.send(pcm[cut:])
        conn.send_close_stream(ListenV1CloseStream(type="CloseStream"))
        live.thread.join(30)
    finals = [strict(m) for m in live.finals()]
    said = words(" ".join(f.channel.alternatives[0].transcript for f in finals))
    assert "country" in said and said[-1] == "country"
    # endpointing=false: only Finalize and the end of the stream end segments
    assert len(finals) == 2 and finals[1].speech_final and not finals[1].from_finalize
    assert live.of("Metadata")


def test_finalize_in_silence_answers_an_empty_from_finalize_result(mock):
    with sdk(mock).listen.v1.connect(model="nova-3", encoding="linear16",
                                     sample_rate=16000) as conn:
        live = Live(conn)
        live.send(silence(0.5), speed=None)
        conn.send_finalize(ListenV1Finalize(type="Finalize"))
        live.wait_for(lambda: live.finals())
        conn.send_close_stream(ListenV1CloseStream(type="CloseStream"))
        live.thread.join(10)
    (empty,) = [strict(m) for m in live.finals()]
    assert empty.from_finalize and empty.channel.alternatives[0].transcript == ""
    assert abs(empty.duration - 0.5) < 0.05


async def test_async_client_file_faster_than_real_time_loses_nothing(whisper):
    """The whole clip as fast as the socket takes it (the SDK awaits each send): the server
    slows the reader down instead of dropping audio, so the transcript is the clip's."""
    client = AsyncDeepgramClient(api_key=KEY, environment=environment(whisper))
    pcm = np.concatenate([JFK.pcm(), silence(0.5)])
    got = []
    async with client.listen.v1.connect(model="nova-3", encoding="linear16",
                                        sample_rate=16000, punctuate=True) as conn:
        async def read():
            async for message in conn:
                got.append(strict(message))

        reader = asyncio.create_task(read())
        for i in range(0, pcm.size, 1600):
            await conn.send_media(pcm[i:i + 1600].tobytes())
        await conn.send_close_stream(ListenV1CloseStream(type="CloseStream"))
        await asyncio.wait_for(reader, 60)
    finals = [m for m in got if m.type == "Results" and m.is_final]
    assert words(" ".join(f.channel.alternatives[0].transcript for f in finals)) == words(
        JFK.text)
    assert got[-1].type == "Metadata" and abs(got[-1].duration - pcm.size / 16000) < 0.05


@pytest.mark.parametrize("encoding, rate, payload", [
    ("linear32", 16000, lambda pcm: (pcm.astype("<f4") / 32768).tobytes()),
    ("mulaw", 8000, lambda pcm: g711(pcm, "mulaw")),
    (None, None, lambda pcm: wav(pcm)),  # no encoding: the container is sniffed
])
def test_encodings(whisper, encoding, rate, payload):
    data = payload(np.concatenate([LJ.pcm(), silence(0.5)]))
    query = {"encoding": encoding, "sample_rate": rate} if encoding else {}
    with sdk(whisper).listen.v1.connect(model="nova-3", **query) as conn:
        live = Live(conn)
        for i in range(0, len(data), 8000):
            conn.send_media(data[i:i + 8000])
        conn.send_close_stream(ListenV1CloseStream(type="CloseStream"))
        live.thread.join(30)
    text = " ".join(strict(f).channel.alternatives[0].transcript for f in live.finals())
    said = words(text)
    assert {"printing", "arts", "exhibition"} <= set(said), text
    assert text == text.lower(), "no punctuate/smart_format: plain lower-case words"


def test_a_wav_header_at_the_start_of_raw_audio_is_not_decoded_as_samples():
    pcm = (np.arange(100) * 50).astype("<i2")
    assert _skip_wav_header(wav(pcm)) == pcm.tobytes()
    assert _skip_wav_header(pcm.tobytes()) == pcm.tobytes()
    head = wav(pcm)[:30]  # a header cut short stays as it came
    assert _skip_wav_header(head) == head


# -- pre-recorded --------------------------------------------------------------------------

def test_prerecorded_from_bytes_and_from_a_chunked_iterator(whisper):
    dg = sdk(whisper)
    data = TWO.path.read_bytes()
    r = dg.listen.v1.media.transcribe_file(request=data, model="nova-3", smart_format=True,
                                           utterances=True, language="en")
    assert isinstance(r, ListenV1Response)
    ListenV1Response.model_validate(r.model_dump(by_alias=True, exclude_unset=True))
    alt = r.results.channels[0].alternatives[0]
    assert words(alt.transcript)[:3] == ["in", "being", "comparatively"]
    assert alt.words and all(w.punctuated_word for w in alt.words)
    assert [w.start for w in alt.words] == sorted(w.start for w in alt.words)
    assert len(r.results.utterances) >= 2  # the 2.5 s pause splits them
    assert abs(r.metadata.duration - TWO.pcm().size / 16000) < 0.05
    assert r.metadata.sha256 == hashlib.sha256(data).hexdigest()
    chunked = dg.listen.v1.media.transcribe_file(
        request=(data[i:i + 16384] for i in range(0, len(data), 16384)), model="nova-3",
        smart_format=True)
    assert chunked.results.channels[0].alternatives[0].transcript == alt.transcript
    assert chunked.results.utterances is None  # only when utterances=true


def test_prerecorded_headerless_audio_with_encoding_and_a_url_body_refused(whisper):
    pcm = LJ.pcm()
    r = httpx.post(f"{whisper.http}/v1/listen?encoding=linear16&sample_rate=16000",
                   content=pcm.tobytes(), headers={"Content-Type": "application/octet-stream"},
                   timeout=60)
    assert r.status_code == 200, r.text
    body = ListenV1Response.model_validate(r.json())
    said = words(body.results.channels[0].alternatives[0].transcript)
    assert {"printing", "exhibition"} <= set(said)
    assert abs(body.metadata.duration - pcm.size / 16000) < 0.05
    with pytest.raises(BadRequestError) as e:
        sdk(whisper).listen.v1.media.transcribe_url(url="https://example.com/a.wav",
                                                    model="nova-3")
    assert "fetches no URLs" in e.value.body["err_msg"] and e.value.body["request_id"]


def test_unsupported_features_are_accepted_and_named_in_warnings(mock):
    r = httpx.post(f"{mock.http}/v1/listen?diarize=true&numerals=true&model=nova-3",
                   content=LJ.path.read_bytes(), headers={"Content-Type": "audio/wav"})
    assert r.status_code == 200, r.text
    warned = {w["parameter"] for w in r.json()["metadata"]["warnings"]}
    assert warned == {"diarize"}, "numerals are applied (numbers as digits)"


# -- admission: auth, capacity, parameters ---------------------------------------------------

def test_auth_token_bearer_and_browser_subprotocol(start_server):
    server = start_server(auth_tokens=KEY)
    with pytest.raises((ApiError, InvalidStatus)) as e, sdk(
            server, api_key="wrong").listen.v1.connect(model="nova-3"):
        pass
    assert refused_with(e.value) == 401
    for client in (sdk(server), DeepgramClient(access_token=KEY,
                                               environment=environment(server))):
        with client.listen.v1.connect(model="nova-3", encoding="linear16",
                                      sample_rate=16000) as conn:
            live = Live(conn)
            conn.send_close_stream(ListenV1CloseStream(type="CloseStream"))
            live.thread.join(10)
        assert live.of("Metadata")
    with pytest.raises(ApiError) as e:
        sdk(server, api_key="wrong").listen.v1.media.transcribe_file(request=b"RIFF",
                                                                    model="nova-3")
    assert e.value.status_code == 401 and e.value.body["err_code"] == "INVALID_AUTH"

    async def browser(key: str):
        url = f"ws://127.0.0.1:{server.port}/v1/listen?encoding=linear16&sample_rate=16000"
        async with connect(url, subprotocols=["token", key]) as ws:
            await ws.send(json.dumps({"type": "CloseStream"}))
            return ws.subprotocol, json.loads(await ws.recv())["type"]

    assert asyncio.run(browser(KEY)) == ("token", "Metadata")
    with pytest.raises(InvalidStatus) as refused:
        asyncio.run(browser("wrong"))
    assert refused.value.response.status_code == 401


def test_a_full_server_answers_429(start_server):
    server = start_server(max_sessions=1)
    dg = sdk(server)
    with dg.listen.v1.connect(model="nova-3", encoding="linear16", sample_rate=16000):
        with pytest.raises((ApiError, InvalidStatus)) as e, dg.listen.v1.connect(
                model="nova-3"):
            pass
        assert refused_with(e.value) == 429
        r = httpx.post(f"{server.http}/v1/listen", content=b"RIFF")
        assert r.status_code == 429 and r.json()["err_code"] == "TOO_MANY_REQUESTS"


@pytest.mark.parametrize("query, says", [
    ("encoding=linear16", "sample_rate is required"),
    ("encoding=linear16&sample_rate=16000&channels=2&multichannel=true", "multichannel"),
    ("encoding=amr-nb&sample_rate=8000", "not supported"),
    ("encoding=wav", "unknown encoding"),
    ("callback=https://example.com/hook", "no outbound requests"),
    ("endpointing=soon", "endpointing"),
    ("language=english!", "language"),
])
def test_bad_parameters_are_refused_at_the_handshake(mock, query, says):
    async def open_():
        async with connect(f"ws://127.0.0.1:{mock.port}/v1/listen?{query}"):
            pass

    with pytest.raises(InvalidStatus) as e:
        asyncio.run(open_())
    assert e.value.response.status_code == 400
    body = json.loads(e.value.response.body)
    assert says in body["err_msg"] and body["err_code"] == "Bad Request", body
    r = httpx.post(f"{mock.http}/v1/listen?{query}", content=b"RIFF")
    assert r.status_code == 400 and says in r.json()["err_msg"]


# -- control messages --------------------------------------------------------------------

async def test_keepalive_holds_an_idle_stream_open_and_bad_messages_do_not_end_it(
        start_server):
    server = start_server(idle_timeout_sec=0.6)
    url = f"ws://127.0.0.1:{server.port}/v1/listen?encoding=linear16&sample_rate=16000"
    async with connect(url) as ws:
        for _ in range(6):  # 1.8 s without audio, kept open by KeepAlive
            await ws.send(json.dumps({"type": "KeepAlive"}))
            await asyncio.sleep(0.3)
        await ws.send("not json")
        await ws.send(json.dumps({"type": "Shout"}))
        errors = [json.loads(await ws.recv()) for _ in range(2)]
        assert [e["type"] for e in errors] == ["Error", "Error"]
        assert "Shout" in errors[1]["description"] and errors[1]["variant"]
        await ws.send(LJ.pcm()[:1600].tobytes())
        await ws.send(b"")  # Deepgram's older close signal
        rest = [json.loads(m) async for m in ws]
        assert rest[-1]["type"] == "Metadata"
        assert ws.close_code == 1000
    async with connect(url) as ws:  # and without KeepAlive the idle timeout closes it
        error = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert error["type"] == "Error" and error["variant"] == "idle_timeout"
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == 1008


def test_the_mock_stream_matches_the_reference_at_any_speed(mock):
    """Lossless ingest through this protocol, checked exactly with the fixture backend."""
    with sdk(mock).listen.v1.connect(model="nova-3", encoding="linear16", sample_rate=16000,
                                     smart_format=True) as conn:
        live = Live(conn)
        live.send(np.concatenate([TWO.pcm(), silence(0.6)]), chunk_ms=20, speed=None)
        conn.send_close_stream(ListenV1CloseStream(type="CloseStream"))
        live.thread.join(30)
    text = " ".join(f.channel.alternatives[0].transcript for f in live.finals())
    assert words(text) == words(TWO.text)


# -- the parameter mapping -----------------------------------------------------------------

def test_parameters_map_onto_recognition_options():
    def options(**query):
        return parse_listen({k: str(v) for k, v in query.items()}, live=True).options(
            live=True)

    assert options(endpointing=300).vad_silence_ms == 300
    assert options(endpointing=10).vad_silence_ms == 100  # raised to the floor
    assert options(endpointing="false").endpointing is False
    assert options().vad_silence_ms is None and options().endpointing  # server default
    assert options(utterance_end_ms=1200).turn_silence_ms == 1200
    assert not options().partials and options(interim_results="true").partials
    assert options(language="multi").language == "auto"
    assert options(language="en-US").language == "en-us"
    params = parse_listen({"keywords": ["Chinese:2", "wood:-1.5", "a:b"], "keyterm": ["Kaldi"]},
                          live=True)
    assert params.hotwords == ("Kaldi", "Chinese", "wood", "a:b")
    assert isinstance(params, ListenParams)
    with pytest.raises(ProtocolError):
        parse_listen({"utterance_end_ms": "200"}, live=True)


def test_plain_form_is_lower_case_without_punctuation():
    assert plain("Hello, World! It's 3.5 km.") == "hello world it's 3.5 km"
    assert plain("“Quoted” (aside)…") == "quoted aside"


# -- Configure ---------------------------------------------------------------------------

def test_configure_replaces_keyterms_and_formatting_in_order_with_the_audio(mock):
    from deepgram.listen.v1.types import ListenV1Configure, ListenV1ConfigureSuccess

    first, second = TWO.pcm()[:16000 * 3], TWO.pcm()[16000 * 3:]
    with sdk(mock).listen.v1.connect(model="nova-3", encoding="linear16", sample_rate=16000,
                                     keyterm="wood") as conn:
        live = Live(conn)
        live.send(np.concatenate([first, silence(0.6)]), speed=None)
        conn.send_configure(ListenV1Configure(keyterms=["Chinese", "engraved"],
                                              features={"punctuate": True}))
        live.send(np.concatenate([second, silence(0.6)]), speed=None)
        conn.send_close_stream(ListenV1CloseStream(type="CloseStream"))
        live.thread.join(30)
    (ok,) = live.of("ConfigureSuccess")
    ok = ListenV1ConfigureSuccess.model_validate(ok.model_dump(by_alias=True, exclude_unset=True))
    assert ok.keyterms == ["Chinese", "engraved"] and ok.request_id
    kinds = [getattr(m, "type", None) for m in live.messages]
    at = kinds.index("ConfigureSuccess")
    before = [m.channel.alternatives[0].transcript for m in live.messages[:at]
              if getattr(m, "type", None) == "Results" and m.is_final]
    after = [m.channel.alternatives[0].transcript for m in live.messages[at:]
             if getattr(m, "type", None) == "Results" and m.is_final and
             m.channel.alternatives[0].transcript]
    assert before and all(t == plain(t) for t in before), before
    assert after and any(t != plain(t) for t in after), "punctuate took effect after it"


def test_configure_refusals_are_configure_failures():
    from deepgram.listen.v1.types import ListenV1ConfigureFailure

    from protocol.deepgram import DeepgramWire
    from session.events import Configured, InputRejected

    wire = DeepgramWire(parse_listen({}, live=True), decoder=None)
    configure = json.dumps({"type": "Configure", "keyterms": ["a"]})
    assert wire.parse(configure).options.hotwords == ("a",)
    with pytest.raises(ProtocolError) as pending:
        wire.parse(configure)
    assert not pending.value.fatal and pending.value.detail == "CONFIGURE_ALREADY_PENDING"
    (failure,) = wire.encode(InputRejected(pending.value.code, pending.value.message,
                                           pending.value.detail))
    failure = ListenV1ConfigureFailure.model_validate_json(failure)
    assert failure.code == "CONFIGURE_ALREADY_PENDING"
    wire.encode(Configured(wire.options))
    with pytest.raises(ProtocolError) as too_many:
        wire.parse(json.dumps({"type": "Configure", "keyterms": [f"t{i}" for i in range(101)]}))
    assert too_many.value.detail == "CONFIGURE_KEYTERM_LIMIT_EXCEEDED"
