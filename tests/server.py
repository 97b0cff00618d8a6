"""A real uvicorn server on a free loopback port, in a background thread of the test process."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import urllib.request

import uvicorn

from app import create_app
from config import Settings
from observability.metrics import scraped_samples
from transport.context import ServerContext
from transport.serving import uvicorn_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    def __init__(self, backend_impl=None, **overrides) -> None:
        self.port = free_port()
        # Energy VAD: the mock tests pin segment boundaries to RMS levels.
        defaults = {"backend": "mock", "vad": "energy", "log_json": True, "log_level": "warning"}
        self.settings = Settings(**{**defaults, **overrides, "port": self.port})
        self.app = create_app(self.settings, backend_impl)
        config = uvicorn_config(self.settings, self.app, host="127.0.0.1", ws_max_size=1 << 22)
        self.tls = self.settings.ssl_certfile is not None
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def ctx(self) -> ServerContext:
        return self.app.state.ctx

    @property
    def http(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def ws_url(self, path: str = "/v1/stt/ws", **query) -> str:
        query = {"call_id": "test", "sample_rate": 16000, **query}
        qs = "&".join(f"{k}={v}" for k, v in query.items() if v is not None)
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}{path}?{qs}"

    def _run(self) -> None:
        asyncio.run(self._server.serve())

    def start(self, timeout: float = 20.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(15)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.http + path, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metrics(self) -> dict[str, float]:
        """Samples of /metrics scraped over HTTP, keyed ``name{label="v",...}``."""
        status, text = self.get("/metrics")
        assert status == 200
        return scraped_samples(text)

    def wait_for(self, predicate, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            time.sleep(0.02)


class BackgroundApp:
    """Any ASGI app (a fake upstream) on uvicorn, on a free loopback port, in a thread."""

    def __init__(self, app) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                     log_config=None, lifespan="off"))
        self._thread = threading.Thread(target=lambda: asyncio.run(self._server.serve()),
                                        daemon=True)

    def __enter__(self) -> BackgroundApp:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake upstream did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)


def drain(server: RunningServer, timeout: float = 30.0) -> int:
    """Run the server's SIGTERM drain on its own loop (in-process servers get no signals)."""
    from transport.drain import drain as run_drain

    loop = server._server.servers[0].get_loop() if server._server.servers else None
    if loop is None:
        raise RuntimeError("server is not running")
    future = asyncio.run_coroutine_threadsafe(run_drain(server.ctx, timeout), loop)
    return future.result(timeout + 10)
