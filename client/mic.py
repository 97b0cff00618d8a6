"""The default microphone as 16 kHz mono s16 chunks (sounddevice over PortAudio, extra ``mic``).

sounddevice is imported only here and only when asked for: it raises ``OSError`` at import
where the PortAudio library is missing (most servers and CI machines).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from client.stream import RATE


class MicUnavailable(Exception):
    """No microphone can be opened here; the message says why in one line."""


class Microphone:
    """Opened at once (so a missing device is reported before connecting); ``chunks()`` yields
    what it records until ``stop()``."""

    def __init__(self, frame_ms: int = 100) -> None:
        try:
            import sounddevice as sd
        except ImportError:
            raise MicUnavailable("the sounddevice package is missing: "
                                 "pip install 'sttd[mic]'") from None
        except OSError as exc:
            raise MicUnavailable(f"cannot load PortAudio ({exc}): install libportaudio2 "
                                 "(Debian, Ubuntu) or portaudio (Homebrew)") from None
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        try:
            self._stream = sd.RawInputStream(
                samplerate=RATE, channels=1, dtype="int16",
                blocksize=RATE * frame_ms // 1000, callback=self._on_audio)
            self._stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            raise MicUnavailable(f"no input device: {exc}") from None

    def _on_audio(self, data, frames, time, status) -> None:
        # PortAudio's thread: hand a copy to the loop (the buffer is reused after we return).
        self._loop.call_soon_threadsafe(self._queue.put_nowait, bytes(data))

    def stop(self) -> None:
        """Stop recording; ``chunks()`` ends after what was already recorded."""
        if self._stream.active:
            self._stream.stop()
        self._loop.call_soon(self._queue.put_nowait, None)

    def close(self) -> None:
        self._stream.close()

    async def chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self._queue.get()) is not None:
            yield chunk
