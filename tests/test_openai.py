"""The OpenAI-compatible API driven by the real ``openai`` SDK against a real uvicorn:
``POST /v1/audio/transcriptions`` in every response format with strict response validation,
SSE, errors and ``GET /v1/models``; ``/v1/realtime`` transcription sessions with server VAD and
with manual commits, every server event validated against the SDK's GA event models."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import numpy as np
import openai
import pytest
import soxr
from openai import AsyncOpenAI, OpenAI
from openai.types.realtime import (
    ConversationItemInputAudioTranscriptionCompletedEvent,
    ConversationItemInputAudioTranscriptionDeltaEvent,
    ConversationItemInputAudioTranscriptionFailedEvent,
    InputAudioBufferClearedEvent,
    InputAudioBufferCommittedEvent,
    InputAudioBufferSpeechStartedEvent,
    InputAudioBufferSpeechStoppedEvent,
    RealtimeErrorEvent,
    SessionCreatedEvent,
    SessionUpdatedEvent,
)
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.backends.conformance import FIXTURES
from tests.media import g711
from tests.media import wav_bytes as wav

JFK = FIXTURES["fw_jfk"]
CLIP = FIXTURES["lj_LJ001-0001"]
TWO = FIXTURES["ep_lj001_0002_0003_pause2p5"]
GA_EVENTS = {cls.model_fields["type"].annotation.__args__[0]: cls for cls in (
    SessionCreatedEvent, SessionUpdatedEvent, InputAudioBufferSpeechStartedEvent,
    InputAudioBufferSpeechStoppedEvent, InputAudioBufferCommittedEvent,
    InputAudioBufferClearedEvent, ConversationItemInputAudioTranscriptionDeltaEvent,
    ConversationItemInputAudioTranscriptionCompletedEvent,
    ConversationItemInputAudioTranscriptionFailedEvent, RealtimeErrorEvent)}


def words(text: str) -> list[str]:
    return "".join(c for c in text.lower() if c.isalnum() or c.isspace()).split()


def pcm24(pcm16k: np.ndarray) -> bytes:
    return soxr.resample(pcm16k.astype(np.float32) / 32768, 16000, 24000).clip(-1, 1).__mul__(
        32767).astype("<i2").tobytes()


def client(server, **kwargs) -> OpenAI:
    return OpenAI(base_url=server.http + "/v1", api_key=kwargs.pop("api_key", "sk-test"),
                  max_retries=0, _strict_response_validation=True, **kwargs)


# -- POST /v1/audio/transcriptions ---------------------------------------------------------

def test_every_response_format_through_the_sdk(whisper):
    c = client(whisper)
    data = JFK.path.read_bytes()
    r = c.audio.transcriptions.create(model="whisper-1", file=("jfk.wav", data))
    assert isinstance(r, openai.types.audio.Transcription)
    assert words(r.text) == words(JFK.text)
    assert r.usage.type == "duration" and abs(r.usage.seconds - 11.0) < 0.2
    text = c.audio.transcriptions.create(model="whisper-1", file=data, response_format="text")
    assert words(text) == words(JFK.text) and text.endswith("\n")
    srt = c.audio.transcriptions.create(model="whisper-1", file=data, response_format="srt")
    assert srt.startswith("1\n00:00:00,") and " --> 00:00:1" in srt
    vtt = c.audio.transcriptions.create(model="whisper-1", file=data, response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.")
    v = c.audio.transcriptions.create(model="whisper-1", file=data,
                                      response_format="verbose_json",
                                      timestamp_granularities=["word", "segment"])
    assert isinstance(v, openai.types.audio.TranscriptionVerbose)
    assert v.language == "english" and abs(v.duration - 11.0) < 0.2
    assert words(" ".join(s.text for s in v.segments)) == words(JFK.text)
    assert [w.word for w in v.words][:4] == ["And", "so", "my", "fellow"]
    assert all(a.start <= b.start for a, b in zip(v.words, v.words[1:], strict=False))
    seg_only = c.audio.transcriptions.create(model="whisper-1", file=data,
                                             response_format="verbose_json")
    assert seg_only.words is None and seg_only.segments


def test_stream_true_sends_a_delta_per_segment_then_done(whisper):
    c = client(whisper)
    events = list(c.audio.transcriptions.create(
        model="gpt-4o-transcribe", file=("turns.wav", TWO.path.read_bytes()), stream=True))
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    (done,) = [e for e in events if e.type == "transcript.text.done"]
    assert len(deltas) >= 2, "one delta per recognised segment"
    assert "".join(d.delta for d in deltas) == done.text
    assert done.usage.type == "tokens" and done.usage.input_tokens > 0
    assert len(words(done.text)) > 20


def test_logprobs_and_language_with_the_json_format(whisper):
    r = client(whisper).audio.transcriptions.create(
        model="gpt-4o-transcribe", file=JFK.path.read_bytes(), include=["logprobs"],
        language="en")
    assert r.logprobs and all(p.logprob <= 0 for p in r.logprobs)
    assert [p.token for p in r.logprobs][:2] == ["And", "so"]


def test_errors_are_openai_error_objects_and_the_server_goes_on(start_server):
    server = start_server(auth_tokens="sk-right", max_upload_bytes=200_000)
    ok = client(server, api_key="sk-right")
    with pytest.raises(openai.AuthenticationError) as e:
        client(server, api_key="sk-wrong").audio.transcriptions.create(
            model="whisper-1", file=wav(CLIP.pcm()[:16000]))
    assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.BadRequestError) as e:
        ok.audio.transcriptions.create(model="whisper-1", file=wav(CLIP.pcm()[:16000]),
                                       temperature=2)
    assert e.value.body["param"] == "temperature" and e.value.body["type"] == \
        "invalid_request_error"
    with pytest.raises(openai.APIStatusError) as e:
        ok.audio.transcriptions.create(model="whisper-1", file=b"not audio at all" * 100)
    assert e.value.status_code == 415 and e.value.body["code"] == "unsupported_audio"
    with pytest.raises(openai.APIStatusError) as e:
        ok.audio.transcriptions.create(model="whisper-1", file=wav(CLIP.pcm()))
    assert e.value.status_code == 413 and e.value.body["code"] == "upload_too_large"
    r = httpx.post(server.http + "/v1/audio/transcriptions", content=b"{}",
                   headers={"Authorization": "Bearer sk-right",
                            "Content-Type": "application/json"})
    assert r.status_code == 415 and set(r.json()["error"]) == {"message", "type", "param",
                                                               "code"}
    assert ok.models.list().data[0].id == server.ctx.backend.model
    assert ok.audio.transcriptions.create(model="whisper-1", file=wav(CLIP.pcm()[:48000]))


def test_a_full_server_answers_429_which_the_sdk_retries(start_server):
    server = start_server(max_sessions=1)
    c = AsyncOpenAI(base_url=server.http + "/v1", api_key="k", max_retries=0)

    async def scenario():
        async with c.realtime.connect(extra_query={"intent": "transcription"}) as conn:
            await conn.recv_bytes()  # session.created: the one slot is taken
            with pytest.raises(openai.RateLimitError) as e:
                await asyncio.to_thread(client(server).audio.transcriptions.create,
                                        model="whisper-1", file=wav(CLIP.pcm()[:16000]))
            assert e.value.body["type"] == "invalid_request_error"
            assert e.value.response.headers["retry-after"] == "1"

    asyncio.run(scenario())


# -- /v1/realtime --------------------------------------------------------------------------

async def recv(conn, wait: float = 30.0) -> dict:
    """The next server event, validated against the SDK's GA model of its type."""
    raw = json.loads(await asyncio.wait_for(conn.recv_bytes(), wait))
    GA_EVENTS[raw["type"]].model_validate(raw)
    return raw


async def until(conn, kind: str, seen: list, wait: float = 60.0) -> dict:
    while True:
        event = await recv(conn, wait)
        seen.append(event)
        if event["type"] == kind:
            return event


async def append(conn, audio: bytes, chunk: int = 4800) -> None:
    for i in range(0, len(audio), chunk):
        await conn.input_audio_buffer.append(audio=base64.b64encode(audio[i:i + chunk]).decode())


def session_update(**input_fields) -> dict:
    return {"type": "transcription", "audio": {"input": input_fields}}


async def test_realtime_server_vad_two_utterances_on_one_socket(whisper):
    c = AsyncOpenAI(base_url=whisper.http + "/v1", api_key="sk-test")
    seen: list[dict] = []
    async with c.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        created = await recv(conn)
        assert created["type"] == "session.created"
        assert created["session"]["audio"]["input"]["format"] == {"type": "audio/pcm",
                                                                  "rate": 24000}
        await conn.session.update(session=session_update(
            format={"type": "audio/pcm", "rate": 24000},
            transcription={"model": "gpt-4o-transcribe", "language": "en"},
            turn_detection={"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                            "silence_duration_ms": 500}))
        updated = await until(conn, "session.updated", seen)
        assert updated["session"]["audio"]["input"]["transcription"]["language"] == "en"
        await append(conn, pcm24(TWO.pcm()) + bytes(24000 * 2))
        first = await until(conn, "conversation.item.input_audio_transcription.completed", seen)
        second = await until(conn, "conversation.item.input_audio_transcription.completed",
                             seen)
    kinds = [e["type"] for e in seen]
    assert kinds.count("input_audio_buffer.speech_started") == 2
    assert kinds.count("input_audio_buffer.speech_stopped") == 2
    committed = [e for e in seen if e["type"] == "input_audio_buffer.committed"]
    assert [e["item_id"] for e in committed] == [first["item_id"], second["item_id"]]
    assert committed[0]["previous_item_id"] is None
    assert committed[1]["previous_item_id"] == first["item_id"]
    started = [e for e in seen if e["type"] == "input_audio_buffer.speech_started"]
    stopped = [e for e in seen if e["type"] == "input_audio_buffer.speech_stopped"]
    assert started[0]["audio_start_ms"] < stopped[0]["audio_end_ms"] < \
        started[1]["audio_start_ms"] < stopped[1]["audio_end_ms"] <= TWO.pcm().size / 16 + 1000
    for item in (first, second):
        deltas = [e["delta"] for e in seen if e.get("item_id") == item["item_id"]
                  and e["type"].endswith(".delta")]
        assert "".join(deltas) == item["transcript"]  # append-only
    expected = words(TWO.text)
    got = words(first["transcript"]) + words(second["transcript"])
    assert got[:3] == expected[:3] and len(got) >= 0.8 * len(expected)


async def test_realtime_manual_commits_clear_and_empty_commit(mock):
    c = AsyncOpenAI(base_url=mock.http + "/v1", api_key="sk-test")
    seen: list[dict] = []
    async with c.realtime.connect(model="gpt-4o-transcribe") as conn:  # LiveKit's URL shape
        await conn.session.update(session=session_update(turn_detection=None))
        updated = await until(conn, "session.updated", seen)
        assert updated["session"]["audio"]["input"]["turn_detection"] is None
        await conn.input_audio_buffer.commit(event_id="c0")  # nothing appended yet
        error = await until(conn, "error", seen)
        assert error["error"]["code"] == "input_audio_buffer_commit_empty"
        assert error["error"]["event_id"] == "c0"
        await append(conn, pcm24(CLIP.pcm()))
        await conn.input_audio_buffer.commit()
        done = await until(conn, "conversation.item.input_audio_transcription.completed", seen)
        assert words(done["transcript"]) == words(CLIP.text)
        await append(conn, pcm24(CLIP.pcm()[:32000]))
        await conn.input_audio_buffer.clear()
        await until(conn, "input_audio_buffer.cleared", seen)
        await append(conn, pcm24(CLIP.pcm()))
        await conn.input_audio_buffer.commit()
        again = await until(conn, "conversation.item.input_audio_transcription.completed",
                            seen)
        assert words(again["transcript"]) == words(CLIP.text), "the cleared audio is gone"
    kinds = [e["type"] for e in seen]
    assert "input_audio_buffer.speech_started" not in kinds  # no server VAD: no VAD events
    assert kinds.count("input_audio_buffer.committed") == 2


async def test_realtime_g711_bad_events_keep_the_session_and_partial_updates(mock):
    c = AsyncOpenAI(base_url=mock.http + "/v1", api_key="sk-test")
    seen: list[dict] = []
    async with c.realtime.connect() as conn:  # no intent: transcription all the same
        await conn.send({"type": "response.create"})
        assert (await until(conn, "error", seen))["error"]["code"] == "invalid_event"
        await conn.session.update(session=session_update(
            turn_detection={"type": "server_vad", "silence_duration_ms": 5}))
        bad = await until(conn, "error", seen)
        assert bad["error"]["param"] == "session.audio.input.turn_detection.silence_duration_ms"
        await conn.session.update(session=session_update(format={"type": "audio/pcmu"}))
        updated = await until(conn, "session.updated", seen)
        vad = updated["session"]["audio"]["input"]["turn_detection"]
        assert vad["type"] == "server_vad", "fields not named keep their values"
        await append(conn, g711(np.concatenate([CLIP.pcm(), np.zeros(16000, np.int16)]),
                                "mulaw"))
        await conn.input_audio_buffer.commit()  # the silence after the last turn: no words
        texts = []
        while (event := await recv(conn))["type"] != "error":
            if event["type"].endswith(".completed"):
                texts.append(event["transcript"])
                if not event["transcript"]:
                    await conn.input_audio_buffer.commit()  # nothing since: refused
        assert event["error"]["code"] == "input_audio_buffer_commit_empty"
        assert texts[-1] == "" and words(" ".join(texts)) == words(CLIP.text)


async def test_realtime_handshakes_auth_subprotocol_beta_and_refusals(start_server):
    server = start_server(auth_tokens="sk-right", mock_tolerant=True)
    base = f"ws://127.0.0.1:{server.port}/v1/realtime"
    with pytest.raises(InvalidStatus) as e:
        async with connect(base + "?intent=transcription"):
            pass
    assert e.value.response.status_code == 401
    assert json.loads(e.value.response.body)["error"]["code"] == "invalid_api_key"
    with pytest.raises(InvalidStatus) as e:
        async with connect(base + "?intent=conversation",
                           additional_headers={"Authorization": "Bearer sk-right"}):
            pass
    assert e.value.response.status_code == 400
    # a browser: the key as a subprotocol, "realtime" selected
    async with connect(base, subprotocols=["realtime", "openai-insecure-api-key.sk-right"]) as ws:
        assert ws.subprotocol == "realtime"
        assert json.loads(await ws.recv())["type"] == "session.created"
    # the beta: OpenAI-Beta header, flat session, transcription_session.* replies
    async with connect(base, additional_headers={"Authorization": "Bearer sk-right",
                                                 "OpenAI-Beta": "realtime=v1"}) as ws:
        assert json.loads(await ws.recv())["type"] == "transcription_session.created"
        await ws.send(json.dumps({"type": "transcription_session.update", "session": {
            "input_audio_format": "pcm16", "turn_detection": None,
            "input_audio_transcription": {"model": "whisper-1", "language": "en"}}}))
        updated = json.loads(await ws.recv())
        assert updated["type"] == "transcription_session.updated"
        assert updated["session"]["turn_detection"] is None
        audio = pcm24(CLIP.pcm())
        for i in range(0, len(audio), 9600):
            await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                      "audio": base64.b64encode(audio[i:i + 9600]).decode()}))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        while (event := json.loads(await ws.recv()))["type"] != \
                "conversation.item.input_audio_transcription.completed":
            pass
        assert words(event["transcript"]) == words(CLIP.text)
    samples = server.metrics()
    assert samples['stt_sessions_opened_total{protocol="openai_realtime"}'] == 2


async def test_realtime_semantic_vad_makes_one_item_of_a_turn_with_a_pause_in_it(whisper):
    """semantic_vad: a hesitation inside a sentence stays in the turn's one item (server_vad
    makes two of it); a 2.5 s pause between sentences ends the turn."""
    from tests.test_turns import hesitation

    hesitant = hesitation(CLIP.pcm(), 0.7)
    audio = np.concatenate([hesitant, np.zeros(48000, np.int16), TWO.pcm(),
                            np.zeros(64000, np.int16)])

    async def items(turn_detection: dict) -> tuple[list[dict], list[dict]]:
        c = AsyncOpenAI(base_url=whisper.http + "/v1", api_key="sk-test")
        seen: list[dict] = []
        async with c.realtime.connect(extra_query={"intent": "transcription"}) as conn:
            await conn.session.update(session=session_update(
                transcription={"model": "gpt-4o-transcribe", "language": "en"},
                turn_detection=turn_detection))
            updated = await until(conn, "session.updated", seen)
            assert updated["session"]["audio"]["input"]["turn_detection"] == turn_detection
            await append(conn, pcm24(audio))
            done = []
            while len(done) < 3:
                event = await until(conn, "conversation.item.input_audio_transcription.completed",
                                    seen)
                if event["transcript"]:
                    done.append(event)
                if len(done) == 1 and turn_detection["type"] == "server_vad" \
                        and len(words(event["transcript"])) > 0.8 * len(words(CLIP.text)):
                    break  # server_vad did not split at the pause: nothing to compare
        return done, seen

    done, seen = await items({"type": "semantic_vad", "eagerness": "low"})
    first = words(done[0]["transcript"])
    assert first[:2] == words(CLIP.text)[:2] and first[-2:] == words(CLIP.text)[-2:], first
    kinds = [e["type"] for e in seen if e.get("item_id") == done[0]["item_id"]]
    assert kinds.count("input_audio_buffer.speech_started") == 1
    assert kinds.count("input_audio_buffer.speech_stopped") == 1
    deltas = [e["delta"] for e in seen if e.get("item_id") == done[0]["item_id"]
              and e["type"].endswith(".delta")]
    assert "".join(deltas) == done[0]["transcript"], "append-only across the turn's segments"
    # The two sentences 2.5 s apart are two turns, each its own item.
    assert words(done[1]["transcript"])[:3] == words(TWO.text)[:3]
    assert done[2]["item_id"] != done[1]["item_id"]
    committed = [e for e in seen if e["type"] == "input_audio_buffer.committed"]
    assert [e["previous_item_id"] for e in committed[:2]] == [None, done[0]["item_id"]]

    per_segment, _ = await items({"type": "server_vad", "threshold": 0.5,
                                  "prefix_padding_ms": 300, "silence_duration_ms": 500})
    assert len(words(per_segment[0]["transcript"])) < len(first), "server_vad: the pause " \
        "ends the item"
