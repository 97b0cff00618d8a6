"""Raw audio ingress: client frames of raw PCM or G.711 → pcm_s16le mono at 16 kHz.

Raw frames carry no header, so the handshake's ``codec``, ``sample_rate`` and ``channels`` say
what they are. Compressed and containerised audio goes through ``protocol.container``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np

from protocol.common import ProtocolError
from protocol.pcm import TARGET_RATE, Resampler, downmix, g711_table, to_s16
from session.events import ErrorCode

RAW_CODECS = ("pcm_s16le", "pcm_f32le", "mulaw", "alaw")
_SAMPLE_BYTES = {"pcm_s16le": 2, "pcm_f32le": 4, "mulaw": 1, "alaw": 1}


class RawDecoder:
    """One session's raw-audio decoder; keeps the resampler's state between frames."""

    def __init__(self, codec: str, sample_rate: int, channels: int = 1) -> None:
        self.codec = codec
        self._channels = channels
        self._frame_bytes = _SAMPLE_BYTES[codec] * channels  # one sample of every channel
        self._resampler = Resampler(sample_rate, live=True)
        # 16 kHz mono s16 needs no conversion at all: frames pass through, validated.
        self._passthrough = (codec == "pcm_s16le" and channels == 1
                             and sample_rate == TARGET_RATE)
        self.decoded_samples = 0  # output samples, as ``ContainerDecoder`` counts them

    def decode(self, frame: bytes) -> bytes:
        if len(frame) % self._frame_bytes:
            raise ProtocolError(
                ErrorCode.INVALID_AUDIO,
                f"{self.codec} frames with {self._channels} channel(s) must hold whole "
                f"{self._frame_bytes}-byte samples; got {len(frame)} bytes",
            )
        if self._passthrough:
            self.decoded_samples += len(frame) // 2
            return frame
        mono = downmix(self._to_float(frame), self._channels)
        out = to_s16(self._resampler.process(mono)).tobytes()
        self.decoded_samples += len(out) // 2
        return out

    def flush(self) -> bytes:
        """The resampler's last samples, at end of stream."""
        if self._passthrough:
            return b""
        return to_s16(self._resampler.flush()).tobytes()

    # The face every decoder shows the receive pump (``protocol.container`` decodes in a
    # thread and yields as it goes; raw frames decode on their own, at once).
    async def feed(self, frame: bytes) -> AsyncIterator[bytes]:
        yield self.decode(frame)

    async def finish(self) -> AsyncIterator[bytes]:
        yield self.flush()

    def close(self) -> None:
        pass

    def _to_float(self, frame: bytes) -> np.ndarray:
        if self.codec == "pcm_s16le":
            return np.frombuffer(frame, "<i2").astype(np.float32) / 32768.0
        if self.codec == "pcm_f32le":
            samples = np.frombuffer(frame, "<f4")
            if not np.isfinite(samples).all():
                raise ProtocolError(ErrorCode.INVALID_AUDIO, "pcm_f32le frame holds NaN or inf")
            return samples
        return g711_table(self.codec)[np.frombuffer(frame, np.uint8)]
