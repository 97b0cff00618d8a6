"""sttd's own streaming client: send a WAV file over the native protocol, yield messages."""

from __future__ import annotations

import asyncio
import json
import uuid
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

RATE = 16000


def read_pcm16k(path: Path) -> bytes:
    """Raw s16le mono 16 kHz samples of a WAV file (other formats come with the codec work)."""
    with wave.open(str(path), "rb") as w:
        if (w.getsampwidth(), w.getnchannels(), w.getframerate()) != (2, 1, RATE):
            raise ValueError(f"need 16-bit mono {RATE} Hz WAV")
        return w.readframes(w.getnframes())


async def stream_pcm(
    url: str,
    pcm: bytes,
    *,
    frame_ms: int = 100,
    speed: float = 1.0,
    params: dict[str, str | int] | None = None,
) -> AsyncIterator[dict]:
    """Stream ``pcm`` (``speed`` 1 = real time, 0 = as fast as possible), then ``eos``; yield
    every server message until the server closes."""
    query = {"call_id": uuid.uuid4().hex[:12], "sample_rate": RATE, "frame_ms": frame_ms,
             **(params or {})}
    sep = "&" if "?" in url else "?"
    step = RATE * 2 * frame_ms // 1000
    async with connect(f"{url}{sep}{urlencode(query)}", max_size=None) as ws:

        async def send() -> None:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            for n, i in enumerate(range(0, len(pcm), step)):
                if speed:
                    await asyncio.sleep(max(0.0, t0 + n * frame_ms / 1000 / speed - loop.time()))
                await ws.send(pcm[i : i + step])
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
