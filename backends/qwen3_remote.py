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
import wave

import numpy as np

from backends.qwen3_engine import Decoded, DecodeRequest
from backends.qwen3_text import ASR_TEXT, Tokenizer, UnitTokenizer

_RATE = 16000


class _JsonTokenizer:
    """A ``tokenizer.json`` through the ``tokenizers`` library (thread-safe for encoding)."""

    def __init__(self, path: str) -> None:
        from tokenizers import Tokenizer as HfTokenizer

        self._tok = HfTokenizer.from_file(path)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=False)


def wav_bytes(audio: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(_RATE)
        w.writeframes((np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def chat_request(request: DecodeRequest, model: str) -> dict:
    wav = base64.b64encode(wav_bytes(request.audio)).decode()
    messages: list[dict] = [
        {"role": "system", "content": request.context},
        {"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}}]},
    ]
    body: dict = {"model": model, "temperature": 0.0, "max_tokens": request.max_tokens}
    forced = (f"language {request.language}{ASR_TEXT}" if request.language else "")
    if forced or request.prefix:
        messages.append({"role": "assistant", "content": forced + request.prefix})
        body |= {"continue_final_message": True, "add_generation_prompt": False}
    if request.want_confidence:
        body |= {"logprobs": True, "top_logprobs": 0}
    return body | {"messages": messages}


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
            import httpx
        except ImportError:
            raise RuntimeError("remote Qwen3-ASR needs httpx: pip install 'sttd[qwen3-remote]'"
                               ) from None
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=self._timeout,
            limits=httpx.Limits(max_connections=self._connections,
                                max_keepalive_connections=self._connections),
        )
        self._tokenizer = (_JsonTokenizer(self._tokenizer_path) if self._tokenizer_path
                           else UnitTokenizer())
        await self.check_health()
        if self.model is None:
            models = await self._get("/v1/models")
            self.model = models["data"][0]["id"]

    def tokenizer(self) -> Tokenizer:
        assert self._tokenizer is not None, "start() first"
        return self._tokenizer

    async def decode(self, request: DecodeRequest) -> Decoded:
        response = await self._client.post("/v1/chat/completions",
                                           json=chat_request(request, self.model))
        if response.status_code != 200:
            raise RuntimeError(f"remote engine answered {response.status_code}: "
                               f"{response.text[:300]}")
        body = response.json()
        choice = body["choices"][0]
        tokens = int(body.get("usage", {}).get("completion_tokens", 0))
        logprob = None
        content = (choice.get("logprobs") or {}).get("content")
        if request.want_confidence and content:
            logprob = sum(item["logprob"] for item in content)
            tokens = len(content)
        return Decoded(choice["message"]["content"] or "", tokens=tokens, logprob=logprob)

    async def check_health(self) -> None:
        response = await self._client.get("/health")
        if response.status_code != 200:
            raise RuntimeError(f"remote engine /health answered {response.status_code}")

    async def _get(self, path: str) -> dict:
        response = await self._client.get(path)
        response.raise_for_status()
        return response.json()

    async def stop(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
