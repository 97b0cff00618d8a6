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
    """Streaming float32 mono resampler to 16 kHz (a pass-through at 16 kHz)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._stream = None
        if rate != TARGET_RATE:
            import soxr

            self._stream = soxr.ResampleStream(rate, TARGET_RATE, 1, dtype="float32",
                                               quality="HQ")

    def process(self, mono: np.ndarray) -> np.ndarray:
        if self._stream is None:
            return mono
        return self._stream.resample_chunk(mono, last=False)

    def flush(self) -> np.ndarray:
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        return self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)


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
