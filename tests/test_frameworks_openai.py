"""LiveKit Agents and Pipecat, through their real OpenAI STT plugin classes, against sttd's
OpenAI-compatible endpoints (``POST /v1/audio/transcriptions``, ``GET /v1/realtime``) with the
embedded Whisper backend on real speech.

Each test drives a framework the way its users do (see ``tests/frameworks.py``): LiveKit's
``openai.STT`` streaming over the Realtime API with server VAD (``&model=`` on the URL) and in
file mode; Pipecat's segmented ``OpenAISTTService`` and its ``OpenAIRealtimeSTTService``, with
Pipecat's own Silero VAD committing turns (``turn_detection: null``) or with server VAD. The
frameworks are plain imports: a missing install fails, it does not skip. Every test also proves
that nothing left loopback (no LiveKit Cloud, no telemetry, no model download).
"""

from __future__ import annotations

import livekit.agents  # noqa: F401  (plain imports: these tests must not skip in CI)
import livekit.plugins.openai  # noqa: F401
import pipecat.services.openai.stt  # noqa: F401
import pytest

from tests import frameworks as fw
from tests.backends.conformance import FIXTURES

JFK = FIXTURES["fw_jfk"]  # "And so my fellow Americans, ask not what your country can do ..."
LJ = FIXTURES["lj_LJ001-0001"]  # "Printing, in the only sense ... represented in the Exhibition"
THREE_TURNS = FIXTURES["ep_ls_three_turns_pause4"]  # three utterances, 4 s of silence between


pytestmark = pytest.mark.usefixtures("loopback_only")


def assert_says(text: str, *expected: str) -> None:
    said = fw.words(text)
    missing = [w for w in expected if w not in said]
    assert not missing, f"{missing} not in transcript {text!r}"


# --------------------------------------------------------------------------- LiveKit Agents


async def test_livekit_realtime_stream_server_vad_three_turns(product_whisper):
    """``openai.STT(use_realtime=True, model="gpt-4o-transcribe")``: the plugin sends
    ``turn_detection: server_vad`` and relies on sttd's speech_started / speech_stopped and
    auto-commit. 48 kHz room audio (the plugin resamples to 24 kHz), three turns on one
    socket, at twice real time."""
    pcm = fw.resample(THREE_TURNS.pcm(), 16000, 48000)
    run = await fw.livekit_stream(f"{product_whisper.http}/v1", pcm, 48000,
                                  model="gpt-4o-transcribe",
                                  speed=2.0, wait_s=30)
    assert not run.errors, run.errors
    kinds = [e.type.value for e in run.events]
    assert run.finals, f"no FINAL_TRANSCRIPT; events: {kinds}"
    # one START/END_OF_SPEECH pair per server VAD turn, and one completed (usage) per turn
    assert len(run.of("start_of_speech")) == len(run.of("end_of_speech")) >= 3, kinds
    assert len(run.of("recognition_usage")) >= len(run.of("end_of_speech")), kinds
    # livekit times a turn by the item_id of speech_started/stopped and looks it up again
    # at .completed: a zero duration means the item ids or audio_*_ms did not line up
    durations = [e.recognition_usage.audio_duration for e in run.of("recognition_usage")]
    assert all(d > 0 for d in durations), durations
    assert 5.0 < sum(durations) < THREE_TURNS.utterances[-1].end_s + 2, durations
    # the turns come back in order, each in its own final (4 s of silence between them)
    where = {}
    for i, text in enumerate(run.finals):
        for w in fw.words(text):
            where.setdefault(w, i)
    assert {"sorrow", "tents", "cutter"} <= where.keys(), run.finals
    assert where["sorrow"] < where["tents"] < where["cutter"], run.finals
    # interims are the deltas so far: append-only, each a prefix of its turn's transcript
    for interim in run.interims:
        assert any(f.startswith(interim) for f in run.finals), (interim, run.finals)
    assert all(e.alternatives[0].language == "en" for e in run.of("final_transcript"))


async def test_livekit_realtime_only_model_commits_on_its_own_vad(product_whisper):
    """``openai.STT(model="gpt-realtime-whisper")``: realtime by default; the plugin leaves
    ``turn_detection`` out of its ``session.update`` and commits each turn when its own VAD
    (``inference.VAD("silero")``, native in ``livekit-local-inference``, offline) ends it."""
    run = await fw.livekit_stream(f"{product_whisper.http}/v1", LJ.pcm(), 16000,
                                  model="gpt-realtime-whisper", speed=2.0, wait_s=30)
    assert not run.errors, run.errors
    assert run.finals, [e.type.value for e in run.events]
    assert_says(" ".join(run.finals), "printing", "arts", "exhibition")


@pytest.mark.parametrize("model, response_format", [
    ("whisper-1", "verbose_json"),  # the plugin asks verbose_json for whisper-1 only
    ("gpt-4o-mini-transcribe", "json"),  # the plugin's default model
])
async def test_livekit_recognize_file_mode(product_whisper, model, response_format):
    """``openai.STT(use_realtime=False).recognize(frames)``: one WAV upload per call, as
    ``stt.StreamAdapter`` sends per VAD segment."""
    event = await fw.livekit_recognize(f"{product_whisper.http}/v1", JFK.pcm(), 16000, model=model)
    assert event.type.value == "final_transcript"
    data = event.alternatives[0]
    assert_says(data.text, "americans", "ask", "country")
    assert data.language == "en"


# --------------------------------------------------------------------------- Pipecat


@pytest.mark.parametrize("model", ["gpt-4o-transcribe", "whisper-1"])
async def test_pipecat_segmented_http_with_silero_vad(product_whisper, model):
    """``OpenAISTTService``: Pipecat's Silero VAD cuts the speech into segments; each is one
    ``POST /v1/audio/transcriptions`` (``audio.wav``, ``language=en``). With
    ``include_prob_metrics`` it asks ``include[]=logprobs`` (json) of GPT models and
    ``verbose_json`` of Whisper models, and gets the matching response type back."""
    from openai.types.audio import Transcription, TranscriptionVerbose

    stt = fw.pipecat_http_stt(f"{product_whisper.http}/v1", model, include_prob_metrics=True)
    run = await fw.pipecat_run(stt, JFK.pcm(), speed=2.0, wait_s=30)
    assert not run.errors, run.errors
    assert run.vad_stops >= 1 and len(run.finals) == run.vad_stops, run
    assert_says(run.text, "americans", "ask", "country")
    for result in run.results:
        if model == "whisper-1":
            assert isinstance(result, TranscriptionVerbose), result
            assert result.segments and all(s.avg_logprob <= 0 for s in result.segments), result
        else:
            assert isinstance(result, Transcription), result
            assert result.logprobs, f"include[]=logprobs gave no logprobs: {result}"
            assert all(lp.token is not None and lp.logprob <= 0 for lp in result.logprobs)


async def test_pipecat_realtime_local_vad_commits(product_whisper):
    """``OpenAIRealtimeSTTService`` with its defaults (model ``gpt-realtime-whisper``,
    ``turn_detection: null``): Pipecat's Silero VAD ends each turn and the service sends
    ``input_audio_buffer.commit``; sttd answers each with a transcript. Real-time pacing."""
    stt = fw.pipecat_realtime_stt(f"ws://127.0.0.1:{product_whisper.port}/v1/realtime")
    run = await fw.pipecat_run(stt, JFK.pcm(), speed=1.0, wait_s=30)
    assert not run.errors, run.errors
    assert run.vad_stops >= 1 and len(run.finals) == run.vad_stops, run
    assert_says(run.text, "americans", "ask", "country")
    assert_deltas_concatenate_to_transcripts(run)


async def test_pipecat_realtime_server_vad(product_whisper):
    """``OpenAIRealtimeSTTService(turn_detection={"type": "server_vad"})`` and no local VAD:
    sttd's speech_started / speech_stopped become Pipecat's proposed turn frames and sttd
    commits the turn itself."""
    stt = fw.pipecat_realtime_stt(f"ws://127.0.0.1:{product_whisper.port}/v1/realtime",
                                  "gpt-4o-transcribe", turn_detection={"type": "server_vad"})
    run = await fw.pipecat_run(stt, LJ.pcm(), local_vad=False, speed=2.0, wait_s=30)
    assert not run.errors, run.errors
    assert run.vad_starts >= 1 and run.vad_stops == run.vad_starts, run
    assert run.finals, run
    assert_says(run.text, "printing", "arts", "exhibition")
    assert_deltas_concatenate_to_transcripts(run)


def assert_deltas_concatenate_to_transcripts(run: fw.PipecatRun) -> None:
    """Pipecat pushes each ``.delta`` as it comes: their concatenation is the transcript."""
    for result in run.results:
        deltas = [r["delta"] for r in run.interim_results if r.get("item_id") == result["item_id"]]
        if deltas:
            assert "".join(deltas) == result["transcript"], (deltas, result)
