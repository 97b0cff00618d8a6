"""A stand-in for sounddevice (PYTHONPATH=tests/fake_mic): a "microphone" that plays the WAV
named by ``FAKE_MIC_WAV`` in real time, then silence. Only what client/mic.py uses."""

import os
import threading
import time
import wave


class PortAudioError(Exception):
    pass


class RawInputStream:
    def __init__(self, samplerate, channels, dtype, blocksize, callback):
        if (samplerate, channels, dtype) != (16000, 1, "int16"):
            raise PortAudioError("the fake records 16 kHz mono int16 only")
        with wave.open(os.environ["FAKE_MIC_WAV"], "rb") as w:
            self._pcm = w.readframes(w.getnframes())
        self._frames, self._callback = blocksize, callback
        self.active = False

    def start(self):
        self.active = True
        self._thread = threading.Thread(target=self._play, daemon=True)
        self._thread.start()

    def _play(self):
        step, n, t0 = self._frames * 2, 0, time.monotonic()
        while self.active:
            chunk = self._pcm[n * step:(n + 1) * step]
            self._callback(chunk + bytes(step - len(chunk)), self._frames, None, None)
            n += 1
            time.sleep(max(0.0, t0 + n * self._frames / 16000 - time.monotonic()))

    def stop(self):
        self.active = False
        self._thread.join()

    def close(self):
        pass
