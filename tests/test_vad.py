import numpy as np

from session.vad import EnergyVAD


def tone(rms: float, n: int = 320) -> np.ndarray:
    # A square wave has RMS equal to its amplitude.
    return (np.where(np.arange(n) % 2, 1, -1) * rms).astype(np.int16)


def test_threshold_and_hysteresis():
    vad = EnergyVAD(threshold=300, release_ratio=0.5)
    assert not vad.is_speech(tone(200))
    assert vad.is_speech(tone(400))
    assert vad.is_speech(tone(200)), "above the release level a voiced run continues"
    assert not vad.is_speech(tone(100))
    assert not vad.is_speech(tone(200)), "once released, the enter threshold applies again"


def test_digital_silence_is_never_speech_even_at_threshold_zero():
    assert not EnergyVAD(threshold=0).is_speech(np.zeros(320, dtype=np.int16))
    assert EnergyVAD(threshold=0).is_speech(tone(1))


def test_classify_matches_frame_by_frame():
    levels = [0, 500, 250, 100, 350, 120, 900, 0]
    frames = np.stack([tone(v) for v in levels])
    one, many = EnergyVAD(300), EnergyVAD(300)
    assert many.classify(frames) == [one.is_speech(f) for f in frames]
    assert many.active == one.active


def test_extreme_samples_do_not_overflow():
    frame = np.full(320, -32768, dtype=np.int16)
    assert EnergyVAD(32767).is_speech(frame)
