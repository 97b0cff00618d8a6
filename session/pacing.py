"""How far a client's audio runs ahead of the wall clock: the rule that tells a client that
sends faster than real time (slow it down) from a live one the server cannot keep up with
(shed its oldest audio). Pure and clock-free: the caller passes the time.

A leaky bucket of real-time allowance: it fills with wall-clock time but never holds more than
the audio actually received, so a pause or a network stall banks no credit. ``ahead`` is the
audio received minus that allowance: about one frame (plus jitter) for a real-time client,
whatever its pauses, and growing without bound for a client that sends faster than real time.
A burst after a stall therefore counts as ahead for its length beyond the frame: it is read
more slowly, never shed.
"""

from __future__ import annotations


class IngestPace:
    def __init__(self, sample_rate: int = 16000) -> None:
        self._rate = sample_rate
        self._received = 0.0  # seconds of audio received
        self._allowance = 0.0  # seconds of audio real time has allowed so far
        self._last: float | None = None
        self.max_ahead = 0.0

    def received(self, samples: int, now: float) -> float:
        """Record ``samples`` arriving at ``now`` (seconds); returns how far ahead of real
        time the client is, in seconds, counting this audio."""
        if self._last is not None:
            self._allowance = min(self._allowance + (now - self._last), self._received)
        self._last = now
        self._received += samples / self._rate
        ahead = self._received - self._allowance
        if ahead > self.max_ahead:
            self.max_ahead = ahead
        return ahead
