"""The vLLM adapter's glue, against a stand-in ``vllm`` module with 0.25's names and call
shapes (the real one needs a GPU: see docs/benchmarks.md for the GPU status). Checks what we
pass to vLLM and how we read what it gives back."""

from __future__ import annotations

import asyncio
import enum
import sys
import threading
import types
from dataclasses import dataclass, field

import numpy as np
import pytest

from backends.base import BackendError, StreamOptions
from backends.qwen3 import Qwen3Backend, Qwen3Options
from backends.qwen3_vllm import VllmEngine, VllmSettings
from tests.backends.test_qwen3_backend import wait_for
from tests.qwen3_fake import answer, tone, words_of


class RequestOutputKind(enum.Enum):
    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2


@dataclass
class SamplingParams:
    temperature: float = 1.0
    max_tokens: int | None = 16
    output_kind: RequestOutputKind = RequestOutputKind.CUMULATIVE
    logprobs: int | None = None


@dataclass
class CompletionOutput:
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    finish_reason: str | None = "stop"


@dataclass
class RequestOutput:
    request_id: str
    outputs: list[CompletionOutput]
    finished: bool


class Tokenizer:
    def encode(self, text, add_special_tokens=True):
        assert add_special_tokens is False
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


@dataclass
class AsyncLLM:
    args: dict
    loop_thread: str
    prompts: list = field(default_factory=list)
    cancelled: list = field(default_factory=list)
    shut_down: bool = False
    dead: bool = False

    @classmethod
    def from_engine_args(cls, args):
        asyncio.get_running_loop()  # 0.25 binds its output handler to the running loop
        engine = cls(args.kwargs, threading.current_thread().name)
        created.append(engine)
        return engine

    def get_tokenizer(self):
        return Tokenizer()

    async def generate(self, prompt, sampling_params, request_id):
        assert isinstance(sampling_params, SamplingParams)
        self.prompts.append((prompt, sampling_params, request_id))
        audio = prompt["multi_modal_data"]["audio"]
        assert audio.dtype == np.float32 and audio.ndim == 1  # 2-D would be several items
        if "dead" in prompt["prompt"]:
            raise RuntimeError("EngineDeadError: EngineCore encountered an issue")
        if "aborted" in prompt["prompt"]:  # aborted from outside (vLLM: finish_reason abort)
            yield RequestOutput(request_id, [CompletionOutput("", [], None, "abort")], True)
            return
        try:
            await asyncio.sleep(0.05 if "hang" not in prompt["prompt"] else 3600)
        except asyncio.CancelledError:
            self.cancelled.append(request_id)
            raise
        text = answer(audio, None)
        prefix = prompt["prompt"].rpartition("<|im_start|>assistant\n")[2]
        text = text[len(prefix):]
        n = max(1, len(text.split()))
        logprob = -0.1 * n if sampling_params.logprobs is not None else None
        # FINAL_ONLY: one output, finished.
        assert sampling_params.output_kind is RequestOutputKind.FINAL_ONLY
        yield RequestOutput(request_id, [CompletionOutput(text, list(range(n)), logprob)], True)

    async def check_health(self):
        if self.dead:
            raise RuntimeError("EngineDeadError")

    def shutdown(self, timeout=None):
        self.shut_down = True


class AsyncEngineArgs:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


created: list[AsyncLLM] = []


@pytest.fixture
def fake_vllm(monkeypatch):
    created.clear()
    vllm = types.ModuleType("vllm")
    vllm.AsyncEngineArgs = AsyncEngineArgs
    vllm.SamplingParams = SamplingParams
    sampling = types.ModuleType("vllm.sampling_params")
    sampling.RequestOutputKind = RequestOutputKind
    async_llm = types.ModuleType("vllm.v1.engine.async_llm")
    async_llm.AsyncLLM = AsyncLLM
    for name, module in {"vllm": vllm, "vllm.sampling_params": sampling,
                         "vllm.v1": types.ModuleType("vllm.v1"),
                         "vllm.v1.engine": types.ModuleType("vllm.v1.engine"),
                         "vllm.v1.engine.async_llm": async_llm}.items():
        monkeypatch.setitem(sys.modules, name, module)
    yield created


def test_engine_args_prompt_and_sampling(fake_vllm):
    settings = VllmSettings(model="/models/Qwen3-ASR-0.6B", load_format="dummy",
                            max_num_seqs=512)
    backend = Qwen3Backend(VllmEngine(settings), "Qwen3-ASR-0.6B", Qwen3Options(tick_sec=0.5))
    backend.load()
    try:
        llm = fake_vllm[0]
        assert llm.loop_thread == backend.engine.thread.name
        assert llm.args == settings.engine_args()
        assert llm.args["limit_mm_per_prompt"] == {"audio": 1}
        assert llm.args["mm_processor_cache_gb"] == 0 and llm.args["load_format"] == "dummy"
        assert llm.prompts[0][2] == "warmup"  # warmed up before ready

        stream = backend.open_stream(StreamOptions(language="auto", hotwords=("Qwen",)))
        stream.accept(tone(2, 2.0))
        final = stream.finalize()
        assert final.text == words_of(2, 4) and final.language == "en"
        assert final.confidence == pytest.approx(np.exp(-0.1), abs=1e-3)
        prompt, params, request_id = llm.prompts[-1]
        assert prompt["prompt"].startswith("<|im_start|>system\nQwen<|im_end|>\n")
        assert prompt["prompt"].endswith("<|im_start|>assistant\n")
        assert prompt["prompt"].count("<|audio_pad|>") == 1
        assert params.temperature == 0.0 and params.logprobs == 0
        assert request_id.startswith("sttd-")
        asyncio.run(backend.check_health())
        llm.dead = True
        with pytest.raises(RuntimeError):
            asyncio.run(backend.check_health())
    finally:
        backend.close()
    assert fake_vllm[0].shut_down


def test_cancelling_a_decode_cancels_the_generate_task(fake_vllm):
    backend = Qwen3Backend(VllmEngine(VllmSettings(model="m")), "m",
                           Qwen3Options(warmup=False, final_timeout_sec=0.2))
    backend.load()
    try:
        stream = backend.open_stream(StreamOptions(hotwords=("hang",)))
        stream.accept(tone(1, 1.0))
        with pytest.raises(BackendError, match="no final"):
            stream.finalize()
        wait_for(lambda: fake_vllm[0].cancelled)  # the request was aborted, not left running
    finally:
        backend.close()


def test_missing_vllm_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    backend = Qwen3Backend(VllmEngine(VllmSettings(model="m")), "m", Qwen3Options())
    with pytest.raises(RuntimeError, match=r"pip install 'sttd\[qwen3\]'"):
        backend.load()
    assert not backend.engine.running


@pytest.mark.parametrize("hotword,error", [
    ("aborted", "vLLM aborted"), ("dead", "EngineDeadError")])
def test_an_aborted_or_dead_engine_fails_the_final_clearly(fake_vllm, hotword, error):
    backend = Qwen3Backend(VllmEngine(VllmSettings(model="m")), "m", Qwen3Options(warmup=False))
    backend.load()
    try:
        stream = backend.open_stream(StreamOptions(hotwords=(hotword,)))
        stream.accept(tone(1, 1.0))
        with pytest.raises(BackendError, match=error):
            stream.finalize()
        assert backend.decodes_in_flight == 0
    finally:
        backend.close()
