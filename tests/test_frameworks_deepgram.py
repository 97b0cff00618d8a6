"""LiveKit Agents and Pipecat through their real Deepgram STT plugin classes, pointed at sttd's
``/v1/listen`` by base URL, with the embedded Whisper backend on real speech.

LiveKit's ``deepgram.STT(base_url=".../v1/listen")`` streams with its defaults (interim results,
``endpointing=25`` ms, VAD events, punctuation, ``Finalize`` on flush, ``KeepAlive`` every 5 s)
and, in file mode, posts one WAV to the pre-recorded endpoint. Pipecat's
``DeepgramSTTService(base_url="ws://...")`` streams with its defaults and its own Silero VAD,
which sends ``Finalize`` at each end of speech and waits for the ``from_finalize`` result.
Nothing may leave loopback (``no_remote_connections``): a base URL the plugin failed to use
would send it to api.deepgram.com.
"""

from __future__ import annotations

import livekit.plugins.deepgram  # noqa: F401  (plain imports: these tests must not skip)
import pipecat.services.deepgram.stt  # noqa: F401
import pytest

from tests import frameworks as fw
from tests.backends.conformance import FIXTURES

JFK = FIXTURES["fw_jfk"]
THREE_TURNS = FIXTURES["ep_ls_three_turns_pause4"]  # three utterances, 4 s of silence between


pytestmark = pytest.mark.usefixtures("loopback_only")


def livekit_deepgram(server, **kwargs):
    from livekit.plugins import deepgram

    return deepgram.STT(base_url=f"{server.http}/v1/listen", api_key=fw.API_KEY,
                        model="nova-3", language="en", **kwargs)


def turns_ended(run: fw.LiveKitRun) -> bool:
    """Each START_OF_SPEECH has had its END_OF_SPEECH (speech_final or UtteranceEnd) and
    every turn gave a final transcript."""
    stops = len(run.of("end_of_speech"))
    return stops >= 1 and stops == len(run.of("start_of_speech")) and len(run.finals) >= stops


async def test_livekit_deepgram_stream_three_turns(product_whisper):
    """48 kHz room audio at twice real time, three turns on one socket."""
    pcm = fw.resample(THREE_TURNS.pcm(), 16000, 48000)
    run = await fw.livekit_stream("", pcm, 48000, speed=2.0, wait_s=30, silence_s=2.0,
                                  make_stt=lambda: livekit_deepgram(product_whisper),
                                  done=turns_ended)
    assert not run.errors, run.errors
    kinds = [e.type.value for e in run.events]
    assert turns_ended(run), kinds
    assert len(run.of("start_of_speech")) >= 3, kinds
    assert run.interims, "interim_results=true by default: INTERIM_TRANSCRIPTs"
    said = fw.words(" ".join(run.finals))
    for word in ("sorrow", "tents", "cutter"):
        assert word in said, run.finals
    assert said.index("sorrow") < said.index("tents") < said.index("cutter")
    finals = run.of("final_transcript")
    assert all(e.alternatives[0].start_time <= e.alternatives[0].end_time for e in finals)
    assert any(e.alternatives[0].text[:1].isupper() for e in finals), "punctuate=true"


async def test_livekit_deepgram_recognize_posts_to_prerecorded(product_whisper):
    """``stt.recognize(frames)``: one ``POST /v1/listen`` with the frames as a WAV."""
    from livekit import rtc
    from livekit.agents import utils

    pcm = JFK.pcm()
    async with utils.http_context.open():
        stt = livekit_deepgram(product_whisper)
        try:
            event = await stt.recognize([rtc.AudioFrame(pcm.tobytes(), 16000, 1, pcm.size)])
        finally:
            await stt.aclose()
    assert event.type.value == "final_transcript"
    said = fw.words(event.alternatives[0].text)
    assert {"americans", "ask", "country"} <= set(said), event


async def test_pipecat_deepgram_with_silero_vad_and_finalize(product_whisper):
    """Pipecat's defaults: interim results, punctuation, and ``Finalize`` when its Silero VAD
    hears the speaker stop; real-time pacing."""
    stt = fw.pipecat_deepgram_stt(f"ws://127.0.0.1:{product_whisper.port}")
    run = await fw.pipecat_run(stt, JFK.pcm(), speed=1.0, wait_s=30)
    assert not run.errors, run.errors
    assert run.vad_stops >= 1 and len(run.finals) >= run.vad_stops, run
    said = fw.words(run.text)
    assert {"americans", "ask", "country"} <= set(said), run.text
    assert run.interims, "interim results reach the pipeline"


async def test_pipecat_deepgram_server_endpointing_without_local_vad(product_whisper):
    """No local VAD: sttd's endpointing (``speech_final``) alone ends the segments."""
    stt = fw.pipecat_deepgram_stt(f"ws://127.0.0.1:{product_whisper.port}", endpointing=300,
                                  utterance_end_ms=1000)
    expected = {"sorrow", "tents", "cutter"}
    run = await fw.pipecat_run(stt, THREE_TURNS.pcm(), local_vad=False, speed=2.0, wait_s=30,
                               silence_s=2.0,
                               done=lambda run: expected <= set(fw.words(run.text)))
    assert not run.errors, run.errors
    said = fw.words(run.text)
    assert expected <= set(said), run.finals
    assert said.index("sorrow") < said.index("tents") < said.index("cutter")
