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


@pytest.fixture
def product_whisper(start_server):
    """sttd with the product defaults: Whisper tiny.en on the CPU and Silero VAD."""
    return start_server(backend="whisper", vad="silero")


@pytest.fixture
def loopback_only():
    """Fails the test when anything tried to leave loopback (framework telemetry, model hubs,
    a cloud endpoint a plugin fell back to)."""
    from tests.frameworks import no_remote_connections

    with no_remote_connections() as refused:
        yield
    assert not refused, f"a framework tried to leave loopback: {refused}"


@pytest.fixture(scope="module")
def whisper():
    """One Whisper tiny.en server (energy VAD) shared by a module's tests."""
    server = RunningServer(backend="whisper", vad="energy")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mock():
    """One mock-backend server shared by a module's tests; it also places audio that went
    through a lossy codec or a resampler (``mock_tolerant``)."""
    server = RunningServer(mock_tolerant=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def tls_files(tmp_path):
    """A certificate for 127.0.0.1 from a test CA: (ca, certfile, keyfile)."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(certfile), append=True)
    cert.private_key_pem.write_to_path(str(keyfile))
    return ca, certfile, keyfile
