"""The protocol seam's pure parts: the session lifecycle, reconfiguration and clear in the
recognizer and endpointer, credentials, the OpenAI Realtime wire's parse/encode state, and a
retryable backend failure closing with 1013 through a real server."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from backends.base import BackendError
from config import Settings
from protocol.common import AudioIn, Command, Configure, ProtocolError, close_for
from protocol.openai_realtime import OpenAIRealtimeProtocol
from session.endpointer import EndpointConfig, Endpointer
from session.events import (
    Committed,
    Configured,
    ErrorCode,
    Final,
    FinalReason,
    Partial,
    Ready,
    SessionError,
    SpeechStarted,
    SpeechStopped,
)
from session.options import RecognitionOptions
from session.recognizer import RecognizerConfig, SegmentRecognizer
from session.state import IllegalTransition, Lifecycle, SessionState
from tests.client import stream
from tests.fakes import ScriptedStream, fail_finals, silence, speech
from transport.auth import Gate

CFG = RecognizerConfig(endpoint=EndpointConfig(silence_ms=300, preroll_ms=100),
                       vad_threshold=300, partial_ms=200)


def test_the_lifecycle_refuses_illegal_transitions_and_reports_the_outcome():
    life = Lifecycle()
    life.to(SessionState.FINISHING)
    with pytest.raises(IllegalTransition):
        life.to(SessionState.OPEN)
    life.ended("completed")
    with pytest.raises(IllegalTransition):
        life.to(SessionState.FAILED)
    life.close(drain_requested=False)
    assert life.outcome == "completed" and life.state is SessionState.CLOSED
    drained_late = Lifecycle()
    drained_late.to(SessionState.DRAINING)
    drained_late.close(drain_requested=True)
    assert drained_late.outcome == "drain_timeout"


class Setup:
    """A recognizer setup over scripted streams that records what it opened."""

    def __init__(self) -> None:
        self.opened: list[RecognitionOptions] = []

    def recognizer_config(self, o: RecognitionOptions) -> RecognizerConfig:
        endpoint = EndpointConfig(silence_ms=(o.vad_silence_ms or 300) if o.endpointing
                                  else None, preroll_ms=100)
        return RecognizerConfig(endpoint=endpoint, vad_threshold=300, partial_ms=200)

    def voice_detector(self, o):
        return None

    def open_stream(self, o):
        self.opened.append(o)
        return ScriptedStream()


def kinds(events) -> list[str]:
    return [type(e).__name__ for e in events]


def test_manual_turns_end_only_on_commit_and_a_new_language_waits_for_the_segment_end():
    setup = Setup()
    rec = SegmentRecognizer(ScriptedStream(), CFG, setup=setup, options=RecognitionOptions())
    rec.reconfigure(RecognitionOptions(endpointing=False))
    events = rec.feed(np.concatenate([speech(500), silence(2000)]), 0.0)
    assert kinds(events) == ["SpeechStarted"], "silence no longer ends the turn"
    rec.reconfigure(RecognitionOptions(endpointing=False, language="de"))
    assert setup.opened == [], "the open segment keeps its stream"
    events = rec.commit(0.0)
    assert kinds(events) == ["SpeechStopped", "Final"] and events[1].text
    assert [o.language for o in setup.opened] == ["de"], "reopened after the final"
    rec.reconfigure(RecognitionOptions(endpointing=True, vad_silence_ms=300))
    events = rec.feed(np.concatenate([speech(500), silence(400)]), 0.0)
    assert kinds(events)[-2:] == ["SpeechStopped", "Final"]


def test_clear_forgets_the_open_segment_and_counts_audio_since_the_commit():
    setup = Setup()
    rec = SegmentRecognizer(ScriptedStream(), CFG, setup=setup, options=RecognitionOptions())
    rec.feed(speech(500), 0.0)
    assert rec.in_speech and rec.samples_since_commit == 8000
    rec.clear()
    assert not rec.in_speech and rec.samples_since_commit == 0
    assert rec.commit(0.0) == [], "nothing left to finalize"
    assert len(setup.opened) == 1, "the cleared segment's stream was replaced"


def test_endpointer_reconfigure_keeps_the_open_segment():
    ep = Endpointer(EndpointConfig(silence_ms=200))
    frame = speech(20)
    for _ in range(10):
        ep.process(frame, True)
    assert ep.in_speech
    ep.reconfigure(EndpointConfig(silence_ms=600))
    quiet = np.zeros(320, np.int16)
    for _ in range(20):  # 400 ms: the old 200 ms would have ended it
        ep.process(quiet, False)
    assert ep.in_speech
    for _ in range(10):
        ep.process(quiet, False)
    assert not ep.in_speech
    with pytest.raises(ValueError):
        ep.reconfigure(EndpointConfig(frame_ms=10))


def test_credentials_are_read_where_each_protocol_puts_them():
    gate = Gate(Settings(auth_tokens="k1,k2"))
    openai = OpenAIRealtimeProtocol().credentials
    assert gate.authorised({"authorization": "Bearer k2"}, {}, openai)
    assert gate.authorised({"sec-websocket-protocol": "realtime, openai-insecure-api-key.k1"},
                           {}, openai)
    assert not gate.authorised({}, {"token": "k1"}, openai), "not where OpenAI clients put it"
    from protocol.common import TOKEN

    assert gate.authorised({"authorization": "token k1"}, {}, (TOKEN,))  # any case
    assert not gate.authorised({"authorization": "Bearer k1"}, {}, (TOKEN,))


def test_a_retryable_failure_asks_the_client_to_try_again():
    assert close_for(SessionError(ErrorCode.BACKEND_ERROR, "x", retryable=True)).code == 1013
    assert close_for(SessionError(ErrorCode.BACKEND_ERROR, "x")).code == 1011


def realtime_wire():
    return OpenAIRealtimeProtocol().handshake({"intent": "transcription"}, {}, Settings())


def decoded(frames) -> list[dict]:
    return [json.loads(f) for f in frames]


def test_realtime_session_update_merges_and_is_echoed_once_applied():
    wire = realtime_wire()
    out = wire.parse(json.dumps({"type": "session.update", "session": {
        "type": "transcription", "audio": {"input": {
            "transcription": {"language": "fr"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 800}}}}}))
    assert isinstance(out, Configure) and out.decoder is None
    assert out.options.language == "fr" and out.options.vad_silence_ms == 800
    assert out.options.preroll_ms == 300, "unnamed fields keep their values"
    (updated,) = decoded(wire.encode(Configured(out.options)))
    assert updated["type"] == "session.updated"
    assert updated["session"]["audio"]["input"]["transcription"]["language"] == "fr"
    assert updated["session"]["audio"]["input"]["format"]["rate"] == 24000
    manual = wire.parse(json.dumps({"type": "session.update", "session": {
        "audio": {"input": {"turn_detection": None, "format": {"type": "audio/pcma"}}}}}))
    assert manual.options.endpointing is False and manual.decoder is not None
    with pytest.raises(ProtocolError) as e:
        wire.parse(json.dumps({"type": "session.update", "session": {
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 96000}}}}}))
    assert not e.value.fatal and e.value.param == "session.audio.input.format.rate"
    assert wire.session["audio"]["input"]["turn_detection"] is None, "a refused update: no change"


def test_realtime_items_deltas_and_commits():
    wire = realtime_wire()
    assert decoded(wire.encode(Ready("s", 16000, "mock", "m")))[0]["type"] == "session.created"
    assert isinstance(wire.parse('{"type":"input_audio_buffer.append","audio":"AAAA"}'), AudioIn)
    frames = []
    for event in (SpeechStarted(1, 100), Partial(1, "ask not", 100, 900),
                  Partial(1, "ask not what", 100, 1200), SpeechStopped(1, 1500),
                  Final(1, "ask not what your country", 100, 1500, FinalReason.ENDPOINT),
                  SpeechStarted(2, 2000), SpeechStopped(2, 2500),
                  Final(2, "", 2000, 2500, FinalReason.ENDPOINT)):
        frames += decoded(wire.encode(event))
    by_type = {}
    for f in frames:
        by_type.setdefault(f["type"], []).append(f)
    first, second = by_type["input_audio_buffer.committed"]
    assert first["previous_item_id"] is None and second["previous_item_id"] == first["item_id"]
    deltas = "".join(d["delta"] for d in by_type[
        "conversation.item.input_audio_transcription.delta"])
    done = by_type["conversation.item.input_audio_transcription.completed"]
    assert deltas == done[0]["transcript"] == "ask not what your country"
    assert done[1]["transcript"] == "" and done[1]["item_id"] == second["item_id"]
    assert len({f["event_id"] for f in frames}) == len(frames)
    # a commit with nothing since the last one
    assert wire.parse('{"type":"input_audio_buffer.commit","event_id":"e7"}') is Command.COMMIT
    (error,) = decoded(wire.encode(Committed(None, 40)))
    assert error["error"]["code"] == "input_audio_buffer_commit_empty"
    assert error["error"]["event_id"] == "e7"


async def test_a_retryable_backend_failure_closes_1013_through_the_server(start_server):
    from tests.backends.conformance import FIXTURES

    server = start_server()
    fail_finals(server.ctx.backend, BackendError("engine restarting", retryable=True))
    result = await asyncio.wait_for(stream(server.ws_url(), FIXTURES["lj_LJ001-0001"].pcm()), 30)
    assert result.messages[-1]["code"] == "backend_error" and result.close_code == 1013
