"""A plain ``websockets`` client for the native protocol, as a user would write it."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


@dataclass
class Transcript:
    messages: list[dict] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""

    def of(self, kind: str) -> list[dict]:
        return [m for m in self.messages if m["type"] == kind]

    @property
    def text(self) -> str:
        return " ".join(m["text"] for m in self.of("final") if m["text"])


async def stream(
    url: str,
    pcm: np.ndarray | bytes,
    *,
    frame_ms: int = 100,
    realtime: float = 0.0,
    end: str | None = "eos",
    tail_silence_ms: int = 0,
    wait_s: float = 60.0,
) -> Transcript:
    """Send ``pcm`` in frames (``realtime`` = 1.0 paces at real time, 0 = as fast as possible),
    then ``end`` (``eos``, ``EOS`` text, or None to just close), and collect everything."""
    data = pcm.tobytes() if isinstance(pcm, np.ndarray) else pcm
    data += b"\x00\x00" * (16 * tail_silence_ms)
    step = 32 * frame_ms
    result = Transcript()
    async with connect(url, max_size=None, ping_interval=None) as ws:

        async def receive() -> None:
            try:
                async for raw in ws:
                    result.messages.append(json.loads(raw))
            except ConnectionClosed:
                pass

        reader = asyncio.create_task(receive())
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            for n, i in enumerate(range(0, len(data), step)):
                if realtime:
                    await asyncio.sleep(max(0.0, t0 + n * frame_ms / 1000 / realtime
                                            - loop.time()))
                await ws.send(data[i : i + step])
            if end == "eos":
                await ws.send(json.dumps({"type": "eos"}))
            elif end == "EOS":
                await ws.send("EOS")
            else:
                await ws.close()
        except ConnectionClosed:
            pass  # the server ended the session mid-stream: what it said is in the reader
        await asyncio.wait_for(reader, wait_s)
        result.close_code = ws.close_code
        result.close_reason = ws.close_reason or ""
    return result
