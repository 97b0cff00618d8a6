"""Silero VAD behind the endpointer: quiet speech that an energy threshold misses."""

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("faster_whisper")

from session.silero import SileroVAD, load_silero  # noqa: E402
from session.vad import EnergyVAD  # noqa: E402
from tests.backends.conformance import FIXTURES  # noqa: E402
from tests.client import stream  # noqa: E402


def voiced_fraction(vad, pcm: np.ndarray, frame_ms: int = 100) -> float:
    frames = pcm[: pcm.size // 320 * 320].reshape(-1, 320)
    step = frame_ms // 20
    decisions = []
    for i in range(0, frames.shape[0], step):  # fed in client-sized chunks, state carried
        decisions += vad.classify(frames[i : i + step])
    assert len(decisions) == frames.shape[0]
    return sum(decisions) / len(decisions)


def test_hears_quiet_speech_that_energy_misses():
    quiet = FIXTURES["fleurs_en_004"].pcm()  # peak about -50 dBFS
    assert voiced_fraction(EnergyVAD(300), quiet) == 0
    assert voiced_fraction(SileroVAD(load_silero()), quiet) > 0.4


def test_ignores_noise_and_silence_and_chunking_does_not_matter():
    model = load_silero()
    for clip_id in ("gen_pinknoise_8s", "kgs_silence"):
        assert voiced_fraction(SileroVAD(model), FIXTURES[clip_id].pcm()) < 0.05
    speech = FIXTURES["lj_LJ001-0001"].pcm()
    a = voiced_fraction(SileroVAD(model), speech, frame_ms=20)
    b = voiced_fraction(SileroVAD(model), speech, frame_ms=1000)
    assert a == b and a > 0.6


async def test_per_session_vad_choice_over_the_socket(server):
    clip = FIXTURES["fleurs_en_004"]
    energy = await stream(server.ws_url(vad="energy"), clip.pcm())
    silero = await stream(server.ws_url(vad="silero"), clip.pcm())
    assert energy.of("final") == []
    assert silero.text == clip.text
    assert silero.close_code == 1000
