import re
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def segments(actions) -> list[tuple[SpeechStart, list[int], SpeechEnd | None]]:
    """Each segment's start, the input frames it was given, and its end."""
    out = []
    for a in actions:
        if isinstance(a, SpeechStart):
            out.append((a, [], None))
        elif isinstance(a, SpeechAudio):
            out[-1][1].extend(int(v) for v in a.pcm[::FRAME])
        else:
            out[-1] = (out[-1][0], out[-1][1], a)
    return out


def test_max_segment_forces_a_final_and_speech_continues_without_loss():
    ep = Endpointer(CFG)
    actions = run(ep, "x" * 80)  # 1.6 s of speech, segments capped at 1 s
    actions += ep.force_end(FinalReason.EOS)
    (s1, a1, e1), (s2, a2, e2) = segments(actions)
    assert e1.reason is FinalReason.MAX_SEGMENT
    # No pause and no quiet frame in the window (frames 25-49): a hard cut at 1 s, and the
    # next segment replays the last quarter segment (the overlap, capped at 250 ms) before it.
    assert (e1.end_sample, e1.replay_from) == (50 * FRAME, 38 * FRAME)
    assert a1 == list(range(50))
    assert s2.start_sample == 38 * FRAME and a2 == list(range(38, 80))
    assert e2.reason is FinalReason.EOS


def test_the_cut_window_is_held_back_until_the_cut_is_chosen():
    ep = Endpointer(CFG)
    assert audio_frames(run(ep, "x" * 40)) == list(range(25)), "frames 25+ are in the window"
    assert [a for a in ep.force_end(FinalReason.COMMIT) if isinstance(a, SpeechAudio)], (
        "a forced end passes the held frames on first")


def test_a_pause_in_the_cut_window_ends_the_segment_at_once_in_its_middle():
    ep = Endpointer(CFG)
    actions = run(ep, "x" * 40 + "." * 5)  # 100 ms unvoiced at frames 40-44: a clear pause
    (_, audio, end), = segments(actions)
    assert end == SpeechEnd(42 * FRAME, FinalReason.MAX_SEGMENT, None)
    assert audio == list(range(42))
    assert not ep.in_speech
    # The rest of the pause waits as pre-roll: the next segment starts at the cut, not before.
    (start, audio, _), = segments(run(ep, "." + "xxx"))
    assert start.start_sample == 42 * FRAME and audio == list(range(42, 49))


def test_after_a_pause_cut_the_next_segment_keeps_what_the_vad_missed_since_the_cut():
    ep = Endpointer(CFG)
    run(ep, "x" * 40 + "." * 5)  # cut at frame 42
    # 9 unvoiced frames since the cut (under silence_ms, 10): soft words the VAD did not
    # hear would have stayed in a segment, so the next one starts at the cut, not pre-roll
    (start, audio, _), = segments(run(ep, "." * 6 + "xxx"))
    assert start.start_sample == 42 * FRAME and audio == list(range(42, 54))


def test_after_a_long_pause_the_next_segment_gets_the_usual_preroll():
    ep = Endpointer(CFG)
    run(ep, "x" * 40 + "." * 5 + "." * 20)
    (start, _, _), = segments(run(ep, "xxx"))
    assert start.start_sample == 60 * FRAME  # 5 pre-roll frames before the voiced run


def test_a_pause_before_the_window_is_not_a_cut():
    ep = Endpointer(CFG)
    actions = run(ep, "x" * 10 + "." * 6 + "x" * 20)
    assert not any(isinstance(a, SpeechEnd) for a in actions)


def loud(n: int, amplitude: int = 3000) -> np.ndarray:
    return np.resize(np.array([amplitude, -amplitude], dtype=np.int16), n)


def test_without_a_pause_the_cut_goes_to_the_quietest_frame_and_the_next_replays_before_it():
    ep = Endpointer(CFG)
    actions = []
    for i in range(50):
        frame = loud(FRAME, 50 if i == 40 else 3000)  # 35 dB below the others: a gap
        actions += ep.process(frame, True)  # the VAD holds on through it (hysteresis)
    (s1, _, e1), (s2, _, e2) = segments(actions)
    assert (e1.reason, e1.end_sample, e1.replay_from) == (
        FinalReason.MAX_SEGMENT, 40 * FRAME, 28 * FRAME)
    assert s2.start_sample == 28 * FRAME and e2 is None and ep.in_speech
    replayed = sum(a.pcm.size for a in actions[actions.index(s2):] if isinstance(a, SpeechAudio))
    assert replayed == 22 * FRAME, "the next segment hears frames 28-49 at once"


def test_a_shallow_dip_is_no_cut_point():
    ep = Endpointer(CFG)
    actions = []
    for i in range(50):
        actions += ep.process(loud(FRAME, 1500 if i == 40 else 3000), True)  # 6 dB: no gap
    end = next(a for a in actions if isinstance(a, SpeechEnd))
    assert (end.end_sample, end.replay_from) == (50 * FRAME, 38 * FRAME)


def test_a_zero_cut_window_and_overlap_cut_hard_with_nothing_replayed():
    ep = Endpointer(replace(CFG, cut_window_ms=0, overlap_ms=0))
    actions = run(ep, "x" * 60)
    assert audio_frames(actions) == list(range(60)), "nothing held, nothing repeated"
    (_, _, e1), (s2, _, _) = segments(actions)
    assert e1 == SpeechEnd(50 * FRAME, FinalReason.MAX_SEGMENT, 50 * FRAME)
    assert s2.start_sample == 50 * FRAME


def test_memory_stays_bounded_in_endless_speech():
    ep = Endpointer(EndpointConfig(max_segment_ms=2000, cut_window_ms=600, overlap_ms=400,
                                   reach_back_ms=1000))
    longest = 0
    for _ in range(3000):
        ep.process(loud(FRAME), True)
        longest = max(longest, len(ep._history))
    assert longest <= 30 + 20 + 50, "window, overlap and reach back, never the whole segment"


def test_reach_back_reopens_the_replay_earlier_right_after_a_cut():
    ep = Endpointer(CFG)
    run(ep, "x" * 50)  # a hard cut at frame 50, the replay opened at frame 38
    actions = ep.reach_back(30 * FRAME + 5)  # inside frame 30: from its start
    assert actions[0] == SpeechStart(30 * FRAME)
    assert audio_frames(actions) == list(range(30, 50))
    assert ep.segment_start == 30 * FRAME and ep.in_speech
    assert ep.reach_back(10 * FRAME) == [], "once"
    rest = run(ep, "x" * 5) + ep.force_end(FinalReason.EOS)
    assert audio_frames(rest) == list(range(50, 55))


def test_reach_back_after_a_pause_cut_opens_a_segment_at_once():
    ep = Endpointer(CFG)
    run(ep, "x" * 40 + "." * 5)  # cut at frame 42, in the pause
    actions = ep.reach_back(35 * FRAME)
    assert actions[0] == SpeechStart(35 * FRAME)
    assert audio_frames(actions) == list(range(35, 45)) and ep.in_speech


def test_no_reach_back_without_an_overlap():
    ep = Endpointer(replace(CFG, cut_window_ms=0, overlap_ms=0))
    run(ep, "x" * 50)
    assert ep.reach_back(30 * FRAME) == []


def test_reach_back_only_right_after_a_cut_and_only_earlier():
    ep = Endpointer(CFG)
    run(ep, "x" * 50)
    assert ep.reach_back(40 * FRAME) == [], "the replay already starts at frame 38"
    run(ep, "x")
    assert ep.reach_back(30 * FRAME) == [], "a frame later the chance is gone"


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="x.", max_size=300), st.sampled_from([0, 200, 3000]),
       st.sampled_from([0, 100, 1000]))
def test_every_voiced_frame_reaches_a_segment_in_order(pattern, window_ms, overlap_ms):
    ep = Endpointer(replace(CFG, cut_window_ms=window_ms, overlap_ms=overlap_ms))
    actions = run(ep, pattern) + ep.force_end(FinalReason.EOS)
    heard: set[int] = set()
    previous = None
    for start, audio, end in segments(actions):
        first = start.start_sample // FRAME
        assert audio == list(range(first, first + len(audio))), "contiguous from its start"
        assert end is not None and first * FRAME <= end.end_sample <= (first + len(audio)) * FRAME
        if previous is not None and previous.replay_from is not None:
            assert start.start_sample == previous.replay_from <= previous.end_sample
        elif previous is not None:
            assert start.start_sample >= previous.end_sample
        heard.update(audio)
        previous = end
    assert _in_runs(pattern, 3) <= heard, "every frame of a voiced run that opens is heard"


def _in_runs(pattern: str, shortest: int) -> set[int]:
    """Frames of voiced runs at least ``shortest`` long (blips open no segment)."""
    return {i for m in re.finditer(f"x{{{shortest},}}", pattern) for i in range(*m.span())}


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
