"""A stand-in for ``vllm serve`` of Qwen3-ASR, for load tests of sttd's qwen3 backend where no
GPU is: the OpenAI chat endpoint of ``tests/qwen3_fake.py`` answering every decode after a
fixed delay. What it measures is sttd's side (scheduling, threads, HTTP, WebSocket), never
the model's speed.

    python -m bench.fake_vllm --port 8020 --delay-ms 0
    STT_BACKEND=qwen3 STT_QWEN3_REMOTE_URL=http://127.0.0.1:8020 sttd serve --port 8016
"""

from __future__ import annotations

import argparse

import uvicorn

from tests.qwen3_fake import FakeVllmServer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8020)
    p.add_argument("--delay-ms", type=float, default=0.0, help="added to every decode")
    args = p.parse_args()
    fake = FakeVllmServer(delay_s=args.delay_ms / 1000, keep_requests=False)
    uvicorn.run(fake.app(), host=args.host, port=args.port, log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()
