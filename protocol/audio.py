"""Audio ingress: turn client frames into pcm_s16le mono at the backend rate."""

from __future__ import annotations

from protocol.common import ProtocolError
from session.events import ErrorCode


class PcmS16Decoder:
    """Raw little-endian 16-bit mono PCM, already at the backend rate: validated, not copied."""

    bytes_per_sample = 2

    def decode(self, frame: bytes) -> bytes:
        if len(frame) % 2:
            raise ProtocolError(
                ErrorCode.INVALID_AUDIO,
                f"pcm_s16le frames must hold whole 16-bit samples; got {len(frame)} bytes",
            )
        return frame
