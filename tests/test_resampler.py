"""The live resampler: sample-exact length, little delay, a clean passband, no aliasing."""

import numpy as np
import pytest

from protocol.pcm import TARGET_RATE, Resampler


def run(r: Resampler, x: np.ndarray, frame: int) -> np.ndarray:
    return np.concatenate([r.process(x[i:i + frame]) for i in range(0, x.size, frame)]
                          + [r.flush()])


def level_db(rate: int, hz: float) -> float:
    t = np.arange(rate) / rate
    x = (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    y = run(Resampler(rate, live=True), x, rate // 50)[2000:-2000]
    return 20 * np.log10(np.sqrt(np.mean(y ** 2)) / (0.5 / np.sqrt(2)) + 1e-12)


@pytest.mark.parametrize("rate", [8000, 24000, 44100, 48000])
def test_live_output_is_sample_exact_and_keeps_nothing_back(rate):
    x = np.zeros(rate, np.float32)
    x[rate // 2] = 1.0  # a click half-way
    r = Resampler(rate, live=True)
    frame = rate // 50  # 20 ms frames
    y = np.concatenate([r.process(x[i:i + frame]) for i in range(0, x.size, frame)])
    # the click is out (and peaks) within 2.5 ms of where it was sent, before any flush
    assert abs(int(np.argmax(np.abs(y))) - TARGET_RATE // 2) <= 40
    # every frame's output is whole: a VAD frame that ends where a client frame ends is
    # complete when that frame arrives (a sample short would cost a frame of latency)
    assert y.size == TARGET_RATE
    assert r.flush().size == 0


@pytest.mark.parametrize("rate", [8000, 24000, 48000])
def test_live_passband_is_flat_and_what_would_alias_is_removed(rate):
    nyquist = min(rate, TARGET_RATE) / 2
    assert abs(level_db(rate, 1000)) < 0.5
    assert level_db(rate, 0.75 * nyquist) > -3  # 3 kHz of G.711: -2.2 dB
    if rate > TARGET_RATE:
        assert level_db(rate, 1.15 * nyquist) < -60  # would fold back into speech
