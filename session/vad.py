"""Energy voice-activity detection with hysteresis: a pure, clock-free state machine."""

from __future__ import annotations

import numpy as np


class EnergyVAD:
    """Calls a frame voiced when its int16 RMS exceeds ``threshold``.

    Once voiced, a frame stays voiced down to ``threshold * release_ratio``, so soft word
    endings and brief dips do not flicker the decision.
    """

    def __init__(self, threshold: float, release_ratio: float = 0.6) -> None:
        self._enter_sq = float(threshold) ** 2
        self._release_sq = (float(threshold) * release_ratio) ** 2
        self._active = False

    @property
    def active(self) -> bool:
        return self._active

    def is_speech(self, frame: np.ndarray) -> bool:
        if frame.size == 0:
            return self._active
        f = frame.astype(np.float32)
        # einsum, not np.dot: BLAS calls release the GIL, and winning it back from the event
        # loop costs far more than the sum itself.
        mean_sq = float(np.einsum("i,i->", f, f)) / f.size
        self._active = mean_sq > (self._release_sq if self._active else self._enter_sq)
        return self._active

    def reset(self) -> None:
        self._active = False

    def classify(self, frames: np.ndarray) -> list[bool]:
        """``is_speech`` for each row of a (n_frames, frame_samples) int16 array, in order."""
        f = frames.astype(np.float32)
        mean_sq = np.einsum("ij,ij->i", f, f) / frames.shape[1]
        decisions = []
        active = self._active
        for energy in mean_sq.tolist():
            active = energy > (self._release_sq if active else self._enter_sq)
            decisions.append(active)
        self._active = active
        return decisions
