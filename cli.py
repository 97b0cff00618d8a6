"""``sttd`` command line: ``sttd serve`` runs the server, ``sttd stream`` and
``sttd transcribe`` are its clients."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import wave
from pathlib import Path

import uvicorn

from backends.registry import available
from client.transcribe_cli import add_transcribe_parser, transcribe_command
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
    stream = sub.add_parser("stream", help="stream a file or the microphone to a server, "
                            "print transcripts")
    source = stream.add_mutually_exclusive_group(required=True)
    source.add_argument("file", type=Path, nargs="?",
                        help="any audio file (WAV, MP3, Ogg, FLAC, M4A, …)")
    source.add_argument("--mic", action="store_true",
                        help="the default microphone (extra 'mic'); Ctrl-C ends the stream "
                        "after its last final")
    stream.add_argument("--codec", choices=("pcm", "auto"), default="pcm",
                        help="pcm: decode here and send 16 kHz PCM; auto: send the file's "
                        "bytes and let the server decode them")
    stream.add_argument("--url", default="ws://127.0.0.1:8000/v1/stt/ws")
    stream.add_argument("--frame-ms", type=int, default=100)
    stream.add_argument("--speed", type=float, default=1.0,
                        help="1 = real time, 0 = as fast as the server reads (lossless)")
    stream.add_argument("--json", action="store_true", help="print every message as JSON")
    add_transcribe_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    try:
        if args.command == "transcribe":
            return asyncio.run(transcribe_command(args))
        return asyncio.run(_stream(args))
    except KeyboardInterrupt:  # (--mic: a second Ctrl-C, not waiting for the last final)
        return 130


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
    from client.render import renderer_for
    from client.stream import file_seconds, read_pcm16k, stream_pcm

    if args.mic:
        return await _stream_mic(args)
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
    messages = stream_pcm(args.url, data, frame_ms=args.frame_ms, speed=args.speed, **options)
    return await _show(messages, renderer_for(args.json))


async def _stream_mic(args: argparse.Namespace) -> int:
    from client.mic import Microphone, MicUnavailable
    from client.render import renderer_for
    from client.stream import stream_audio

    try:
        mic = Microphone(args.frame_ms)
    except MicUnavailable as exc:
        print(f"sttd stream --mic: {exc}", file=sys.stderr)
        return 1
    loop = asyncio.get_running_loop()

    def stop() -> None:  # the first Ctrl-C ends the audio: eos, then the last final
        mic.stop()
        loop.remove_signal_handler(signal.SIGINT)

    loop.add_signal_handler(signal.SIGINT, stop)
    print("sttd stream: listening; Ctrl-C to stop", file=sys.stderr, flush=True)
    try:
        messages = stream_audio(args.url, mic.chunks(), frame_ms=args.frame_ms)
        return await _show(messages, renderer_for(args.json))
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        mic.close()


async def _show(messages, renderer) -> int:
    """Every message through the renderer; errors also on stderr. Exit 1 on a session error,
    3 when the server cannot be reached, 75 when it is full."""
    from websockets.exceptions import InvalidStatus

    status = 0
    try:
        async for msg in messages:
            renderer.show(msg)
            if msg["type"] in ("error", "closed"):
                print(f"sttd stream: {msg}", file=sys.stderr)
                status = 1
    except InvalidStatus as exc:
        print(f"sttd stream: refused: HTTP {exc.response.status_code} "
              f"{exc.response.body.decode(errors='replace').strip()}", file=sys.stderr)
        return 75 if exc.response.status_code in (429, 503) else 1
    except OSError as exc:
        print(f"sttd stream: cannot reach the server: {exc}", file=sys.stderr)
        return 3
    finally:
        renderer.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
