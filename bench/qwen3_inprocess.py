"""sttd with the Qwen3-ASR backend on an in-process fake engine (``tests/qwen3_fake.py``:
every decode answers after a fixed delay, by audio length alone), for load tests where no
GPU is. It measures what sttd adds around vLLM's ``AsyncLLM`` (sessions, tick scheduling,
the engine thread), never the model's speed.

    python -m bench.qwen3_inprocess --port 8017 --delay-ms 0
    python -m bench.load --url ws://127.0.0.1:8017/v1/stt/ws --concurrency 64,256,400,512
"""

from __future__ import annotations

import argparse

import uvicorn

from app import create_app
from backends.qwen3 import Qwen3Backend, Qwen3Options
from config import Settings
from tests.qwen3_fake import FakeEngine


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8017)
    p.add_argument("--delay-ms", type=float, default=0.0, help="every decode's latency")
    args = p.parse_args()
    settings = Settings(backend="qwen3", port=args.port)  # the rest from STT_* as usual
    backend = Qwen3Backend(
        FakeEngine(base_s=args.delay_ms / 1000, keep_calls=False, listen=False), "fake-engine",
        Qwen3Options(tick_sec=settings.qwen3_tick_sec,
                     final_concurrency=settings.qwen3_final_concurrency))
    uvicorn.run(create_app(settings, backend), host="127.0.0.1", port=args.port,
                ws="websockets-sansio", log_config=None, access_log=False)


if __name__ == "__main__":
    main()
