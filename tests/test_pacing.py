"""The pace rule: real-time clients (with jitter, pauses, stalls) stay within a frame or two of
the wall clock; clients faster than real time run ahead by what they sent early."""

import random

import pytest

from session.pacing import IngestPace

RATE = 16000
FRAME = 0.02  # seconds


def test_real_time_client_with_jitter_stays_within_a_few_frames():
    pace, rng = IngestPace(RATE), random.Random(7)
    worst = 0.0
    for n in range(3000):  # 60 s of 20 ms frames, each up to 80 ms late
        worst = max(worst, pace.received(int(FRAME * RATE), n * FRAME + rng.uniform(0, 0.08)))
    assert worst <= FRAME + 0.08 + 1e-9


def test_pauses_bank_no_credit():
    pace = IngestPace(RATE)
    pace.received(RATE, 0.0)  # 1 s of audio at once, then silence on the wire for 10 s
    ahead = [pace.received(RATE // 10, 10.0 + i * 0.001) for i in range(50)]
    # 5 s sent in 50 ms after the pause: ahead by nearly all of it, not 10 s behind.
    assert ahead[-1] == pytest.approx(5.0 - 0.049, abs=1e-6)


def test_unpaced_client_runs_ahead_by_what_it_sent_early():
    pace = IngestPace(RATE)
    for n in range(1000):  # 20 s of audio in 1 s
        ahead = pace.received(int(FRAME * RATE), n * 0.001)
    assert ahead == pytest.approx(20.0 - 0.999, abs=1e-6)
    assert pace.max_ahead == ahead


def test_twenty_percent_faster_than_real_time_drifts_ahead():
    pace = IngestPace(RATE)
    for n in range(500):  # 10 s of audio in 8.33 s
        ahead = pace.received(int(FRAME * RATE), n * FRAME / 1.2)
    assert ahead == pytest.approx(10.0 - 499 * FRAME / 1.2, abs=1e-6)
