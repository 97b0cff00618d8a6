"""``sttd`` command line: ``sttd serve`` runs the server."""

from __future__ import annotations

import argparse
import os
import sys

import uvicorn

from backends.registry import available
from config import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sttd", description="Real-time speech-to-text server.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--backend", choices=available(), help="ASR backend (STT_BACKEND)")
    serve.add_argument("--host", help="bind address (STT_HOST)")
    serve.add_argument("--port", type=int, help="port (STT_PORT)")
    serve.add_argument(
        "--workers", type=int, default=1,
        help="server processes sharing the port; each loads its own model and has its own "
             "STT_MAX_SESSIONS",
    )
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    return 2


def _serve(args: argparse.Namespace) -> int:
    for key, value in (("STT_BACKEND", args.backend), ("STT_HOST", args.host),
                       ("STT_PORT", args.port)):
        if value is not None:
            os.environ[key] = str(value)  # worker processes read settings from the environment
    settings = Settings()
    uvicorn.run(
        "app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=args.workers,
        ws="websockets-sansio",
        ws_max_size=max(settings.max_frame_bytes * 2, 1 << 20),
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
