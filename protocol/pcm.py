"""Sample conversion shared by every audio decoder: any layout and rate → 16 kHz mono s16.

Channels are averaged first (so soxr resamples one channel, not several), then soxr's
streaming resampler keeps its filter state across frames, so chunk boundaries leave no clicks.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

TARGET_RATE = 16000
MIN_RATE = 8000
MAX_RATE = 384000  # above any real capture; a "rate" beyond it is a hostile header


def downmix(samples: np.ndarray, channels: int) -> np.ndarray:
    """Interleaved float32 samples → mono (the mean of the channels)."""
    if channels == 1:
        return samples
    return samples.reshape(-1, channels).mean(axis=1, dtype=np.float32)


def to_s16(samples: np.ndarray) -> np.ndarray:
    # × 32768 (not 32767) so 16-bit input comes back sample-exact.
    scaled = np.rint(np.clip(samples, -1.0, 1.0) * 32768.0)  # clip first: huge floats overflow
    return np.clip(scaled, -32768, 32767).astype("<i2")


class Resampler:
    """Streaming float32 mono resampler to 16 kHz (a pass-through at 16 kHz).

    ``live=True`` (raw frames of a live stream) is built for low delay: a stream's end of
    speech must not wait for the resampler. soxr's high-quality modes filter in blocks: with
    20 ms frames their output lags the input by 6-37 ms at 24/48 kHz and 12-115 ms at 8 kHz,
    so the frame that ends a turn is often not heard until the next one arrives (+1 frame of
    final latency). Here a short Kaiser-windowed FIR (63 taps: anti-alias before
    downsampling, anti-image after upsampling; within 1.5 dB to 75 % of the lower Nyquist,
    3 dB at 8 kHz, and >= 60 dB down past it) does the filtering, and soxr's quick cubic
    mode, which keeps no block back, only changes the rate: 0.6-2 ms of delay in all, and
    every frame's output is whole (20 ms in, 320 samples out), which the VAD's 20 ms frames
    need to finish a turn when the frame that ends it arrives.
    Containers (files, MediaRecorder chunks of a second) keep soxr's HQ.
    """

    _TAPS = 63

    def __init__(self, rate: int, *, live: bool = False) -> None:
        self.rate = rate
        self._stream = None
        self._fir = None
        if rate != TARGET_RATE:
            import soxr

            self._stream = soxr.ResampleStream(rate, TARGET_RATE, 1, dtype="float32",
                                               quality="QQ" if live else "HQ")
        if rate != TARGET_RATE and live:
            self._received = self._sent = 0  # samples: the flush trims the filter's tail
            self._down = rate > TARGET_RATE
            nyquist = min(rate, TARGET_RATE) / 2
            self._fir = _lowpass(0.92 * nyquist, rate if self._down else TARGET_RATE,
                                 self._TAPS)
            self._history = np.zeros(self._TAPS - 1, dtype=np.float32)

    def process(self, mono: np.ndarray) -> np.ndarray:
        if self._stream is None:
            return mono
        if self._fir is None:
            return self._stream.resample_chunk(mono, last=False)
        self._received += mono.size
        if self._down:
            out = self._stream.resample_chunk(self._filter(mono), last=False)
        else:
            out = self._filter(self._stream.resample_chunk(mono, last=False))
        if not self._sent:
            # Interpolation keeps a sample or a few back; starting the output that many
            # samples early keeps each frame's output whole, so a VAD frame that ends where
            # the client's frame ends is complete without waiting for the next frame.
            lag = -(-self._received * TARGET_RATE // self.rate) - out.size
            if lag > 0:
                out = np.concatenate([np.zeros(lag, dtype=np.float32), out])
        self._sent += out.size
        return out

    def flush(self) -> np.ndarray:
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        if self._fir is None:
            return self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        tail = np.zeros(self._TAPS // 2, dtype=np.float32)  # what the filter holds back
        if self._down:
            out = self._stream.resample_chunk(self._filter(tail), last=True)
        else:
            rest = self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            out = self._filter(np.concatenate([rest, tail]))
        due = round(self._received * TARGET_RATE / self.rate) - self._sent
        return out[:max(0, due)]

    def _filter(self, x: np.ndarray) -> np.ndarray:
        buf = np.concatenate([self._history, x.astype(np.float32, copy=False)])
        self._history = buf[buf.size - (self._TAPS - 1):]
        return np.convolve(buf, self._fir, "valid").astype(np.float32, copy=False)


def _lowpass(cutoff_hz: float, rate: int, taps: int) -> np.ndarray:
    """Linear-phase windowed-sinc low-pass with unit gain at DC."""
    n = np.arange(taps) - (taps - 1) / 2
    h = np.sinc(2 * cutoff_hz / rate * n) * np.kaiser(taps, 8.0)
    return (h / h.sum()).astype(np.float32)


def frame_to_float(frame) -> tuple[np.ndarray, int]:
    """A PyAV ``AudioFrame`` → (interleaved float32 samples in [-1, 1], channel count)."""
    channels = len(frame.layout.channels)
    data = frame.to_ndarray()
    if frame.format.is_planar:
        data = data.T  # (channels, n) → (n, channels)
    data = data.reshape(-1)
    kind = data.dtype
    if kind == np.float32:
        out = data
    elif kind == np.float64:
        out = data.astype(np.float32)
    elif kind == np.uint8:
        out = (data.astype(np.float32) - 128.0) / 128.0
    else:
        out = data.astype(np.float32) / float(np.iinfo(kind).max + 1)
    return out, channels


@lru_cache(maxsize=2)
def g711_table(codec: str) -> np.ndarray:
    """μ-law or A-law byte → s16, read off FFmpeg's own decoder once."""
    import av

    ctx = av.CodecContext.create({"mulaw": "pcm_mulaw", "alaw": "pcm_alaw"}[codec], "r")
    ctx.sample_rate = 8000
    ctx.layout = "mono"
    frames = ctx.decode(av.Packet(bytes(range(256))))
    table = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32)
    assert table.size == 256
    return table / 32768.0
