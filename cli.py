"""``sttd`` command line: ``sttd serve`` runs the server."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import wave
from pathlib import Path

import uvicorn

from backends.registry import available
from config import Settings
from transport.serving import uvicorn_config


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
    stream = sub.add_parser("stream", help="stream a WAV file to a server, print transcripts")
    stream.add_argument("file", type=Path, help="any audio file (WAV, MP3, Ogg, FLAC, M4A, …)")
    stream.add_argument("--codec", choices=("pcm", "auto"), default="pcm",
                        help="pcm: decode here and send 16 kHz PCM; auto: send the file's "
                        "bytes and let the server decode them")
    stream.add_argument("--url", default="ws://127.0.0.1:8000/v1/stt/ws")
    stream.add_argument("--frame-ms", type=int, default=100)
    stream.add_argument("--speed", type=float, default=1.0, help="1 = real time, 0 = fast")
    stream.add_argument("--json", action="store_true", help="print every message as JSON")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    return asyncio.run(_stream(args))


def _serve(args: argparse.Namespace) -> int:
    for key, value in (("STT_BACKEND", args.backend), ("STT_HOST", args.host),
                       ("STT_PORT", args.port)):
        if value is not None:
            os.environ[key] = str(value)  # worker processes read settings from the environment
    settings = Settings()
    config = uvicorn_config(settings, "app:create_app", factory=True, workers=args.workers)
    server = uvicorn.Server(config)
    if config.workers > 1:
        # Each worker drains itself on the SIGTERM the supervisor forwards (transport/drain.py).
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, sockets=[config.bind_socket()]).run()
    else:
        try:
            server.run()
        except KeyboardInterrupt:
            pass
        if not server.started:
            return 3  # uvicorn's STARTUP_FAILURE: the app, TLS or the bind is broken
    return 0


async def _stream(args: argparse.Namespace) -> int:
    from client.stream import file_seconds, read_pcm16k, stream_pcm

    try:
        if args.codec == "auto":
            data = args.file.read_bytes()
            seconds = file_seconds(args.file) or len(data) / 16000
            messages = max(1, round(seconds * 1000 / args.frame_ms))
            options = {"params": {"codec": "auto"}, "step": -(-len(data) // messages)}
        else:
            data, options = read_pcm16k(args.file), {}
    except (OSError, ValueError, EOFError, wave.Error) as exc:
        print(f"sttd stream: {args.file}: {exc}", file=sys.stderr)
        return 2
    status = 0
    async for msg in stream_pcm(args.url, data, frame_ms=args.frame_ms, speed=args.speed,
                                **options):
        kind = msg["type"]
        if args.json:
            print(json.dumps(msg, ensure_ascii=False), flush=True)
        elif kind == "partial":
            print(f"  … {msg['text']}", flush=True)
        elif kind == "final":
            print(f"[{msg['start_ms'] / 1000:7.2f}-{msg['end_ms'] / 1000:7.2f}] {msg['text']}",
                  flush=True)
        if kind in ("error", "closed"):
            print(f"sttd stream: {msg}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
