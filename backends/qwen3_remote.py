"""Qwen3-ASR on a remote ``vllm serve`` through its OpenAI-compatible chat API: the GPU tier
scales apart from the WebSocket tier (kaldi-gstreamer-server's master/worker split), with the
same streaming scheme as in-process.

One decode is one ``POST /v1/chat/completions``: the context as the system message, the
segment as an ``input_audio`` WAV part, and the forced language tag and rollback prefix as an
assistant message the model continues (``continue_final_message``, which vLLM allows only
with ``add_generation_prompt`` off). Cancelling a decode closes its HTTP request, and vLLM
aborts a request whose client went away.
"""

from __future__ import annotations

import base64
import io
import json
import wave

import numpy as np

from backends.qwen3_engine import Decoded, DecodeRequest
from backends.qwen3_text import ASR_TEXT, Tokenizer, UnitTokenizer, sanitize_context

_RATE = 16000
_JSON = {"Content-Type": "application/json"}


class _JsonTokenizer:
    """A ``tokenizer.json`` through the ``tokenizers`` library (thread-safe for encoding)."""

    def __init__(self, path: str) -> None:
        from tokenizers import Tokenizer as HfTokenizer

        self._tok = HfTokenizer.from_file(path)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=False)


def wav_bytes(pcm: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(_RATE)
        w.writeframes(pcm.astype("<i2", copy=False).tobytes())
    return buf.getvalue()


_AUDIO_SLOT = "\u0000audio\u0000"


def chat_request(request: DecodeRequest, model: str) -> bytes:
    """The chat-completions body as JSON bytes. The audio's base64 is spliced in after
    encoding: it needs no escaping, and scanning megabytes of it in ``json.dumps`` was a
    seventh of the server's CPU at 256 streams (profiled)."""
    context = sanitize_context(request.context).replace("\0", "")
    prefix = request.prefix.replace("\0", "")
    messages: list[dict] = [
        {"role": "system", "content": context},
        {"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": _AUDIO_SLOT, "format": "wav"}}]},
    ]
    body: dict = {"model": model, "temperature": 0.0, "max_tokens": request.max_tokens}
    forced = (f"language {request.language}{ASR_TEXT}" if request.language else "")
    if forced or prefix:
        messages.append({"role": "assistant", "content": forced + prefix})
        body |= {"continue_final_message": True, "add_generation_prompt": False}
    if request.want_confidence:
        body |= {"logprobs": True, "top_logprobs": 0}
    head, _, tail = json.dumps(body | {"messages": messages}).partition(
        json.dumps(_AUDIO_SLOT))
    return b"".join((head.encode(), b'"', base64.b64encode(wav_bytes(request.audio)), b'"',
                     tail.encode()))


class RemoteEngine:
    name = "remote"

    def __init__(self, url: str, *, api_key: str = "", model: str | None = None,
                 tokenizer: str | None = None, timeout: float = 60.0,
                 connections: int = 512) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self._api_key = api_key
        self._tokenizer_path = tokenizer
        self._timeout = timeout
        self._connections = connections
        self._client = None
        self._tokenizer: Tokenizer | None = None

    async def start(self) -> None:
        try:
            import aiohttp
        except ImportError:
            raise RuntimeError("remote Qwen3-ASR needs aiohttp: pip install 'sttd[qwen3-remote]'"
                               ) from None
        # aiohttp, not httpx: at hundreds of concurrent decodes httpx's connection pool and
        # async-library detection cost more CPU than the rest of the server (profiled).
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        self._client = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=self._timeout),
            connector=aiohttp.TCPConnector(limit=self._connections),
        )
        if self._tokenizer_path:
            self._tokenizer = _JsonTokenizer(self._tokenizer_path)
        await self.check_health()
        if self.model is None:
            async with self._client.get(f"{self.url}/v1/models") as response:
                response.raise_for_status()
                self.model = (await response.json())["data"][0]["id"]

    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer (shared, thread-safe), or word units per stream, whose
        vocabulary then lives and dies with its session."""
        return self._tokenizer or UnitTokenizer()

    async def decode(self, request: DecodeRequest) -> Decoded:
        async with self._client.post(f"{self.url}/v1/chat/completions",
                                     data=chat_request(request, self.model),
                                     headers=_JSON) as response:
            if response.status != 200:
                raise RuntimeError(f"remote engine answered {response.status}: "
                                   f"{(await response.text())[:300]}")
            body = await response.json()
        choice = body["choices"][0]
        tokens = int(body.get("usage", {}).get("completion_tokens", 0))
        logprob = None
        content = (choice.get("logprobs") or {}).get("content")
        if request.want_confidence and content:
            logprob = sum(item["logprob"] for item in content)
            tokens = len(content)
        return Decoded(choice["message"]["content"] or "", tokens=tokens, logprob=logprob)

    async def check_health(self) -> None:
        async with self._client.get(f"{self.url}/health") as response:
            if response.status != 200:
                raise RuntimeError(f"remote engine /health answered {response.status}")

    async def stop(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()
