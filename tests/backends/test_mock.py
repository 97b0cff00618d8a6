import time

import numpy as np
import pytest

from backends.base import StreamOptions
from backends.mock import MockBackend
from config import REPO_ROOT
from tests.backends.conformance import FIXTURES, BackendConformance


@pytest.fixture(scope="module")
def loaded_mock():
    backend = MockBackend(REPO_ROOT / "references")
    backend.load()
    yield backend
    backend.close()


class TestMockConformance(BackendConformance):
    @pytest.fixture
    def backend(self, loaded_mock):
        return loaded_mock


def test_partials_reveal_a_growing_prefix(loaded_mock):
    clip = FIXTURES["lj_LJ001-0001"]
    pcm = clip.pcm()
    stream = loaded_mock.open_stream(StreamOptions())
    seen = []
    for i in range(0, pcm.size, 8000):
        stream.accept(pcm[i : i + 8000])
        hyp = stream.partial()
        seen.append(hyp.text if hyp else "")
    words = clip.text.split()
    counts = [len(t.split()) for t in seen]
    assert counts == sorted(counts) and 0 < counts[len(counts) // 2] < len(words)
    assert all(clip.text.startswith(t) for t in seen if t)
    assert stream.finalize().text == clip.text
    stream.close()


def test_unknown_audio_transcribes_to_nothing(loaded_mock):
    stream = loaded_mock.open_stream(StreamOptions())
    rng = np.random.default_rng(0)
    stream.accept((rng.standard_normal(32000) * 3000).astype(np.int16))
    assert stream.partial() is None
    assert stream.finalize().empty
    stream.close()


def test_delay_simulates_compute():
    backend = MockBackend(REPO_ROOT / "references", delay_ms=50)
    backend.load()
    stream = backend.open_stream(StreamOptions())
    t0 = time.perf_counter()
    stream.finalize()
    assert time.perf_counter() - t0 >= 0.045
    stream.close()
