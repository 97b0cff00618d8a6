"""Silero VAD (ONNX, the model faster-whisper ships) behind the same interface as EnergyVAD.

The model is loaded once per process (``SileroModel``); each session keeps only its LSTM state,
32 ms window remainder and hysteresis (``SileroVAD``). Level-independent: it hears quiet
speech that an energy threshold misses, and ignores loud noise that passes one.
"""

from __future__ import annotations

import functools
import os

import numpy as np

_WINDOW = 512  # samples per model step at 16 kHz (32 ms)
_CONTEXT = 64  # samples of the previous window the model sees


class SileroModel:
    def __init__(self, path: str) -> None:
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.enable_cpu_mem_arena = False
        opts.log_severity_level = 4
        self._session = onnxruntime.InferenceSession(
            path, providers=["CPUExecutionProvider"], sess_options=opts
        )

    def run(self, windows: np.ndarray, h: np.ndarray, c: np.ndarray):
        """Speech probabilities for consecutive (n, 576) windows, and the carried state."""
        probs, h, c = self._session.run(None, {"input": windows, "h": h, "c": c})
        return probs.reshape(-1), h, c


@functools.lru_cache(maxsize=1)
def load_silero() -> SileroModel:
    try:
        from faster_whisper.utils import get_assets_path
    except ImportError:
        raise RuntimeError("Silero VAD needs the 'whisper' extra (faster-whisper)") from None
    return SileroModel(os.path.join(get_assets_path(), "silero_vad_v6.onnx"))


class SileroVAD:
    """Per-session Silero state. A frame is voiced from the first window whose probability
    reaches ``threshold`` until one falls below ``release`` (hysteresis, as Silero's own
    utilities do)."""

    def __init__(self, model: SileroModel, threshold: float = 0.5, release: float = 0.35):
        self._model = model
        self._threshold = threshold
        self._release = release
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(_CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._active = False

    @property
    def active(self) -> bool:
        return self._active

    def is_speech(self, frame: np.ndarray) -> bool:
        return self.classify(frame.reshape(1, -1))[-1] if frame.size else self._active

    def classify(self, frames: np.ndarray) -> list[bool]:
        audio = frames.reshape(-1).astype(np.float32) / 32768.0
        lead = self._pending.size
        buf = np.concatenate([self._pending, audio]) if lead else audio
        n = buf.size // _WINDOW
        probs = np.zeros(0, dtype=np.float32)
        if n:
            body = buf[: n * _WINDOW].reshape(n, _WINDOW)
            context = np.vstack([self._context, body[:-1, -_CONTEXT:]]) if n > 1 else (
                self._context[None, :])
            windows = np.hstack([context, body])
            probs, self._h, self._c = self._model.run(windows, self._h, self._c)
            self._context = body[-1, -_CONTEXT:].copy()
        self._pending = buf[n * _WINDOW :].copy()
        decisions = []
        frame = frames.shape[1]
        for j in range(frames.shape[0]):
            done = (lead + (j + 1) * frame) // _WINDOW  # windows complete by this frame's end
            if done:
                p = float(probs[done - 1])
                self._active = p >= (self._release if self._active else self._threshold)
            decisions.append(self._active)
        return decisions
