import numpy as np
import pytest

from session.endpointer import EndpointConfig, Endpointer, SpeechAudio, SpeechEnd, SpeechStart
from session.events import FinalReason

CFG = EndpointConfig(speech_start_ms=60, silence_ms=200, preroll_ms=100, max_segment_ms=1000)
FRAME = CFG.frame_samples  # 320


def run(ep: Endpointer, pattern: str):
    """Feed one 20 ms frame per character ('x' voiced, '.' silent); frame i holds value i."""
    out = []
    for ch in pattern:
        frame = np.full(FRAME, ep.position // FRAME, dtype=np.int16)
        out += ep.process(frame, ch == "x")
    return out


def audio_frames(actions) -> list[int]:
    """Which input frames reached the backend, in order."""
    pcm = np.concatenate([a.pcm for a in actions if isinstance(a, SpeechAudio)])
    return [int(v) for v in pcm[::FRAME]]


def test_speech_starts_after_the_voiced_run_with_preroll():
    ep = Endpointer(CFG)
    actions = run(ep, "......xx")
    assert actions == []
    actions = run(ep, "x")
    assert isinstance(actions[0], SpeechStart)
    # 5 silent pre-roll frames (100 ms) before the 3-frame voiced run (frames 6..8)
    assert actions[0].start_sample == 1 * FRAME
    assert audio_frames(actions) == [1, 2, 3, 4, 5, 6, 7, 8]


def test_isolated_blips_do_not_start_speech():
    ep = Endpointer(CFG)
    assert run(ep, "x.x.xx.x..xx.") == []
    assert not ep.in_speech


def test_end_after_silence_reports_last_voiced_sample_and_keeps_all_audio():
    ep = Endpointer(CFG)
    actions = run(ep, "xxxx.x" + "." * 10)
    ends = [a for a in actions if isinstance(a, SpeechEnd)]
    assert len(ends) == 1
    assert ends[0].reason is FinalReason.ENDPOINT
    assert ends[0].end_sample == 6 * FRAME  # end of frame 5, the last voiced one
    # every frame up to the endpoint (10 silent frames = 200 ms after frame 5) was passed on
    assert audio_frames(actions) == list(range(0, 16))
    assert not ep.in_speech


def test_short_pause_does_not_end_the_segment():
    ep = Endpointer(CFG)
    actions = run(ep, "xxx" + "." * 9 + "xxx")
    assert not any(isinstance(a, SpeechEnd) for a in actions)
    assert ep.in_speech


def test_max_segment_forces_a_final_and_speech_continues_without_loss():
    ep = Endpointer(CFG)
    actions = run(ep, "x" * 80)  # 1.6 s of speech, segments capped at 1 s
    kinds = [type(a).__name__ for a in actions if not isinstance(a, SpeechAudio)]
    assert kinds == ["SpeechStart", "SpeechEnd", "SpeechStart"]
    end = next(a for a in actions if isinstance(a, SpeechEnd))
    assert end.reason is FinalReason.MAX_SEGMENT
    assert audio_frames(actions) == list(range(80)), "no frame lost at the forced split"


def test_force_end_only_in_speech():
    ep = Endpointer(CFG)
    assert ep.force_end(FinalReason.COMMIT) == []
    run(ep, "xxxx")
    (end,) = ep.force_end(FinalReason.COMMIT)
    assert end == SpeechEnd(4 * FRAME, FinalReason.COMMIT)
    assert ep.force_end(FinalReason.COMMIT) == []


@pytest.mark.parametrize("silence_ms,frames", [(100, 5), (500, 25), (510, 26)])
def test_silence_ms_rounds_up_to_whole_frames(silence_ms, frames):
    ep = Endpointer(EndpointConfig(speech_start_ms=20, silence_ms=silence_ms, preroll_ms=0))
    run(ep, "x" + "." * (frames - 1))
    assert ep.in_speech
    assert any(isinstance(a, SpeechEnd) for a in run(ep, "."))
