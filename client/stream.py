"""sttd's own streaming client: send an audio file (or any chunks) over the native protocol,
yield messages.

Either the client decodes the file to 16 kHz mono PCM (PyAV) and streams that, or it sends
the file's bytes as they are (``codec=auto``) and the server decodes them.
"""

from __future__ import annotations

import asyncio
import json
import uuid
import wave
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

RATE = 16000


def read_pcm16k(path: Path) -> bytes:
    """Raw s16le mono 16 kHz samples of any audio file FFmpeg (PyAV) decodes."""
    try:
        with wave.open(str(path), "rb") as w:  # the common case needs no decoder
            if (w.getsampwidth(), w.getnchannels(), w.getframerate()) == (2, 1, RATE):
                return w.readframes(w.getnframes())
    except (wave.Error, EOFError):
        pass
    import av

    out = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ValueError("no audio stream")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
            for frame in container.decode(audio=0):
                out += [f.to_ndarray().tobytes() for f in resampler.resample(frame)]
            out += [f.to_ndarray().tobytes() for f in resampler.resample(None)]
    except av.error.FFmpegError as exc:
        raise ValueError(f"not a decodable audio file ({exc.strerror})") from None
    return b"".join(out)


def file_seconds(path: Path) -> float:
    """The file's duration as its container states it (for pacing only)."""
    import av

    try:
        with av.open(str(path)) as container:
            return float(container.duration or 0) / 1_000_000
    except av.error.FFmpegError:
        return 0.0  # the server will say what is wrong with it


async def stream_pcm(
    url: str,
    pcm: bytes,
    *,
    frame_ms: int = 100,
    speed: float = 1.0,
    params: dict[str, str | int] | None = None,
    step: int | None = None,
) -> AsyncIterator[dict]:
    """Stream ``pcm`` (``speed`` 1 = real time, 0 = as fast as the server reads: its TCP
    backpressure paces the sender, so nothing is lost), then ``eos``; yield every server
    message until the server closes. ``step`` bytes per message (default: one ``frame_ms`` of
    16 kHz s16) with ``frame_ms`` between messages."""
    step = step or RATE * 2 * frame_ms // 1000

    async def paced() -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for n, i in enumerate(range(0, len(pcm), step)):
            if speed:
                await asyncio.sleep(max(0.0, t0 + n * frame_ms / 1000 / speed - loop.time()))
            yield pcm[i : i + step]

    async for msg in stream_audio(url, paced(), frame_ms=frame_ms, params=params):
        yield msg


async def stream_audio(
    url: str,
    chunks: AsyncIterable[bytes],
    *,
    frame_ms: int = 100,
    params: dict[str, str | int] | None = None,
) -> AsyncIterator[dict]:
    """Send each chunk as it comes (a file paced by the caller, or a microphone), then
    ``eos`` when ``chunks`` ends; yield every server message until the server closes."""
    query = {"call_id": uuid.uuid4().hex[:12], "sample_rate": RATE, "frame_ms": frame_ms,
             **(params or {})}
    sep = "&" if "?" in url else "?"
    async with connect(f"{url}{sep}{urlencode(query)}", max_size=None) as ws:

        async def send() -> None:
            async for chunk in chunks:
                await ws.send(chunk)  # waits while the server does not read (backpressure)
            await ws.send(json.dumps({"type": "eos"}))

        sender = asyncio.create_task(send())
        try:
            async for raw in ws:
                yield json.loads(raw)
        except ConnectionClosed:
            pass
        finally:
            sender.cancel()
        if ws.close_code not in (1000, None):
            yield {"type": "closed", "code": ws.close_code, "reason": ws.close_reason}
