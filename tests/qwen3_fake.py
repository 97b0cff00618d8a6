"""The GPU edge we cannot run here, faked: a Qwen3-ASR "model" that reads tones, an in-process
``Engine`` around it, and an OpenAI-compatible ``vllm serve`` imitation for remote mode.

The oracle hears a session by its tone: audio at ``tone_hz(k)`` is "said" by session ``k``,
and every voiced half second is one word ``s{k}w{i}``. So a transcript says whose audio it
was (cross-talk shows) and how much of it (partials grow, finals are complete), and a forced
prefix the model would not have produced itself is recorded as a mismatch.
"""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time
import wave
from dataclasses import dataclass, field

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from backends.qwen3_engine import Decoded, DecodeRequest
from backends.qwen3_text import ASR_TEXT, UnitTokenizer, build_prompt

RATE = 16000
WORD_SEC = 0.5


def tone_hz(k: int) -> int:
    return 400 + 50 * k


def tone(k: int, seconds: float, amplitude: int = 6000) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * tone_hz(k) * t) * amplitude).astype(np.int16)


def words_of(k: int, n: int) -> str:
    return " ".join(f"s{k}w{i}" for i in range(n))


def hear(audio: np.ndarray) -> tuple[int | None, int]:
    """(speaker, words) in 16 kHz audio (int16, or float32 in [-1, 1])."""
    if audio.dtype == np.int16:
        audio = audio.astype(np.float32) / 32768
    voiced = [audio[i : i + RATE // 10] for i in range(0, audio.size, RATE // 10)]
    voiced = [w for w in voiced if w.size and np.sqrt(np.mean(w**2)) > 0.02]
    if not voiced:
        return None, 0
    speech = np.concatenate(voiced)
    spectrum = np.abs(np.fft.rfft(speech))
    hz = np.argmax(spectrum) * RATE / speech.size
    return round((hz - 400) / 50), int(speech.size / RATE / WORD_SEC + 1e-6)


def answer(audio: np.ndarray, language: str | None) -> str:
    speaker, n = hear(audio)
    if speaker is None:
        return "" if language else f"language None{ASR_TEXT}"
    text = words_of(speaker, n)
    return text if language else f"language English{ASR_TEXT}{text}"


@dataclass
class Call:
    request: DecodeRequest
    started: float
    ended: float | None = None
    cancelled: bool = False
    mismatch: bool = False
    thread: str = ""


@dataclass
class FakeEngine:
    """An ``Engine`` with GPU-like latency: ``base_s`` + ``per_audio_s`` per audio second,
    plus ``blocking_s`` of synchronous work on the engine loop (vLLM 0.25's preprocessing)."""

    base_s: float = 0.02
    per_audio_s: float = 0.0
    blocking_s: float = 0.0
    fail: str | None = None  # "partial" | "final" | "all": raise for those decodes
    hang_finals: bool = False
    name: str = "fake"
    keep_calls: bool = True  # off for load tests
    listen: bool = True  # off for load tests: answer by length alone, without an FFT
    calls: list[Call] = field(default_factory=list)
    started: bool = False
    stopped: bool = False
    healthy: bool = True
    _tokenizer: UnitTokenizer = field(default_factory=UnitTokenizer)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def start(self) -> None:
        self.started = True

    def tokenizer(self) -> UnitTokenizer:
        return self._tokenizer

    async def check_health(self) -> None:
        if not self.healthy:
            raise RuntimeError("engine dead")

    async def stop(self) -> None:
        self.stopped = True

    async def decode(self, request: DecodeRequest) -> Decoded:
        call = Call(request, time.monotonic(), thread=threading.current_thread().name)
        if self.keep_calls:
            with self._lock:
                self.calls.append(call)
        build_prompt(request.context, request.language, request.prefix)  # must not raise
        if self.blocking_s:
            time.sleep(self.blocking_s)  # noqa: ASYNC251 - that is the point: a blocked loop
        final = request.request_id.rsplit("-", 1)[-1].startswith("f")
        try:
            if final and self.hang_finals:
                await asyncio.sleep(3600)
            await asyncio.sleep(self.base_s + self.per_audio_s * request.audio.size / RATE)
        except asyncio.CancelledError:
            call.cancelled = True
            raise
        finally:
            call.ended = time.monotonic()
        if self.fail == "all" or self.fail == ("final" if final else "partial"):
            raise RuntimeError("CUDA error: device-side assert")
        if self.listen:
            full = answer(request.audio, request.language)
        else:
            full = f"language English{ASR_TEXT}" + words_of(0, int(request.audio.size / RATE
                                                                 / WORD_SEC))
        if not full.startswith(request.prefix):
            call.mismatch = True
            return Decoded(" <mismatch>", tokens=1)
        text = full[len(request.prefix):]
        tokens = max(1, len(self._tokenizer.encode(text)))
        logprob = -0.05 * tokens if request.want_confidence else None
        return Decoded(text, tokens=tokens, logprob=logprob)

    # -- views for assertions --------------------------------------------------------------

    def of(self, stream_id_part: str) -> list[Call]:
        return [c for c in self.calls if stream_id_part in c.request.request_id]

    def max_overlap(self, calls: list[Call]) -> int:
        """Most decodes of ``calls`` in flight at one moment."""
        edges = sorted([(c.started, 1) for c in calls]
                       + [(c.ended or float("inf"), -1) for c in calls])
        level = peak = 0
        for _, step in edges:
            level += step
            peak = max(peak, level)
        return peak


@dataclass
class FakeVllmServer:
    """What sttd's remote mode sees of ``vllm serve --model Qwen3-ASR``: ``/health``,
    ``/v1/models`` and ``/v1/chat/completions`` with an audio part, validated as vLLM 0.25
    validates them, answered by the tone oracle."""

    model: str = "Qwen/Qwen3-ASR-0.6B"
    delay_s: float = 0.02
    requests: list[dict] = field(default_factory=list)
    healthy: bool = True
    keep_requests: bool = True  # off for load tests: bodies carry the audio
    answered: int = 0

    def app(self):
        app = FastAPI()

        @app.get("/health")
        async def health():
            return JSONResponse({}, status_code=200 if self.healthy else 503)

        @app.get("/v1/models")
        async def models():
            return {"object": "list", "data": [{"id": self.model, "object": "model"}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            self.answered += 1
            if self.keep_requests:
                self.requests.append(body)
            problem = self._invalid(body)
            if problem:
                return JSONResponse({"error": {"message": problem}}, status_code=400)
            messages = body["messages"]
            part = messages[1]["content"][0]["input_audio"]
            with wave.open(io.BytesIO(base64.b64decode(part["data"]))) as w:
                pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
            audio = pcm.astype(np.float32) / 32768
            start = messages[2]["content"] if len(messages) == 3 else ""
            forced = start.partition(ASR_TEXT)[0][len("language "):] if (
                start.startswith("language ") and ASR_TEXT in start
                and not start.startswith("language English")) else None
            if forced:  # the tag is the prompt's; the model answers the text after it
                start = start.partition(ASR_TEXT)[2]
            await asyncio.sleep(self.delay_s)
            full = answer(audio, forced)
            text = full[len(start):] if full.startswith(start) else " <mismatch>"
            n = max(1, len(text.split()))
            choice = {"index": 0, "finish_reason": "stop",
                      "message": {"role": "assistant", "content": text}}
            if body.get("logprobs"):
                choice["logprobs"] = {"content": [{"token": t, "logprob": -0.1}
                                                  for t in range(n)]}
            return {"id": "chatcmpl-1", "object": "chat.completion", "model": self.model,
                    "choices": [choice], "usage": {"completion_tokens": n}}

        return app

    def _invalid(self, body: dict) -> str | None:
        if body.get("model") != self.model:
            return f"model {body.get('model')!r} does not exist"
        if body.get("continue_final_message") and body.get("add_generation_prompt", True):
            return "continue_final_message and add_generation_prompt cannot both be true"
        roles = [m["role"] for m in body["messages"]]
        if roles[:2] != ["system", "user"] or roles[2:] not in ([], ["assistant"]):
            return f"unexpected roles {roles}"
        if roles[2:] and not body.get("continue_final_message"):
            return "an assistant turn without continue_final_message would be closed"
        return None
