from __future__ import annotations

import pytest

from tests.server import RunningServer


@pytest.fixture
def start_server():
    """Start real uvicorn servers on free loopback ports; all are stopped after the test."""
    servers: list[RunningServer] = []

    def start(**overrides) -> RunningServer:
        server = RunningServer(**overrides)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_server) -> RunningServer:
    return start_server()
