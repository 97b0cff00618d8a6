"""The backend conformance suite: every backend subclasses ``BackendConformance``.

A subclass provides a loaded ``backend`` fixture and may override ``check_transcript`` (exact
for the mock; a WER bound for real models) and the clip ids it understands.
"""

from __future__ import annotations

import numpy as np
import pytest

from backends.base import ASRBackend, ASRStream, StreamOptions
from backends.fixtures import Fixture, load_fixtures
from backends.stable import normalise
from config import REPO_ROOT
from session.endpointer import EndpointConfig
from session.events import Final, FinalReason, Partial, SpeechStarted, SpeechStopped
from session.recognizer import RecognizerConfig, SegmentRecognizer

FIXTURES = {f.id: f for f in load_fixtures(REPO_ROOT / "references")}
CONFIG = RecognizerConfig(EndpointConfig(), vad_threshold=300, partial_ms=500)


def run_clip(stream: ASRStream, pcm: np.ndarray, frame_ms: int = 100, commit_at=None):
    """Stream ``pcm`` through a recognizer; commit at sample ``commit_at`` and at the end."""
    rec = SegmentRecognizer(stream, CONFIG)
    events = []
    step = 16 * frame_ms
    for i in range(0, pcm.size, step):
        if commit_at is not None and i <= commit_at < i + step:
            events += rec.commit(0.0)
        events += rec.feed(pcm[i : i + step], 0.0)
        events += rec.maybe_partial()
    events += rec.commit(0.0, FinalReason.EOS)
    return events


class BackendConformance:
    multi_segment_clip = "ep_ls_three_turns_pause4"
    single_clip = "ls_6930_75918_0000"
    long_clip = "lj_LJ001-0001"
    noise_clips = ("gen_pinknoise_8s", "kgs_silence")
    options = StreamOptions()

    @pytest.fixture
    def backend(self) -> ASRBackend:  # pragma: no cover - subclasses override
        raise TypeError("subclass BackendConformance and provide a loaded backend fixture")

    def check_transcript(self, hypothesis: str, reference: str) -> None:
        assert hypothesis.split() == reference.split()

    def clip(self, clip_id: str) -> Fixture:
        return FIXTURES[clip_id]

    def test_declares_the_contract(self, backend):
        assert isinstance(backend, ASRBackend)
        assert backend.name and backend.model
        assert backend.capabilities.sample_rate == 16000
        stream = backend.open_stream(self.options)
        assert isinstance(stream, ASRStream)
        stream.close()

    def test_exactly_one_final_per_segment_and_it_comes_last(self, backend):
        clip = self.clip(self.multi_segment_clip)
        stream = backend.open_stream(self.options)
        events = run_clip(stream, clip.pcm())
        stream.close()
        by_segment: dict[int, list] = {}
        for e in events:
            by_segment.setdefault(e.segment_seq, []).append(e)
        assert len(by_segment) >= len(clip.utterances)
        for seq, seg in by_segment.items():
            assert isinstance(seg[0], SpeechStarted), seq
            assert isinstance(seg[-1], Final), seq
            assert sum(isinstance(e, Final) for e in seg) == 1, seq
            assert isinstance(seg[-2], SpeechStopped), seq  # ahead of the slow final
            assert all(isinstance(e, Partial) for e in seg[1:-2]), seq
        text = " ".join(e.text for e in events if isinstance(e, Final) and e.text)
        self.check_transcript(text, clip.text)

    def test_word_times_lie_inside_their_segment_and_increase(self, backend):
        if not backend.capabilities.words:
            pytest.skip("backend reports no word timings")
        stream = backend.open_stream(self.options)
        finals = [e for e in run_clip(stream, self.clip(self.long_clip).pcm())
                  if isinstance(e, Final)]
        stream.close()
        words = [w for f in finals for w in f.words]
        assert words
        for f in finals:
            for w in f.words:
                assert f.start_ms <= w.start_ms <= w.end_ms
                assert w.confidence is None or 0.0 <= w.confidence <= 1.0
        starts = [w.start_ms for w in words]
        assert starts == sorted(starts)

    def test_commit_splits_without_losing_or_repeating_words(self, backend):
        clip = self.clip(self.long_clip)
        pcm = clip.pcm()
        stream = backend.open_stream(self.options)
        finals = [e for e in run_clip(stream, pcm, commit_at=pcm.size // 2)
                  if isinstance(e, Final)]
        stream.close()
        assert finals[0].reason is FinalReason.COMMIT
        assert finals[-1].reason is FinalReason.EOS
        self.check_transcript(" ".join(f.text for f in finals if f.text), clip.text)

    def test_settled_words_begin_the_final(self, backend):
        """A partial's settled words are a promise: the segment's final begins with them
        (case and punctuation aside)."""
        if not backend.capabilities.partials:
            pytest.skip("backend gives no partials")
        stream = backend.open_stream(self.options)
        events = run_clip(stream, self.clip(self.multi_segment_clip).pcm())
        stream.close()
        finals = {e.segment_seq: [normalise(w) for w in e.text.split()]
                  for e in events if isinstance(e, Final)}
        settled = [(e.segment_seq, [normalise(w) for w in e.stable_text.split()])
                   for e in events if isinstance(e, Partial)]
        assert any(words for _, words in settled), "words settle before their final"
        for seq, words in settled:
            assert finals[seq][:len(words)] == words, (words, finals[seq])
        # and settled text only grows within a segment
        for (seq_a, a), (seq_b, b) in zip(settled, settled[1:], strict=False):
            if seq_a == seq_b:
                assert b[:len(a)] == a, (a, b)

    @pytest.mark.parametrize("clip_id", ["gen_pinknoise_8s", "kgs_silence"])
    def test_no_words_on_silence_or_noise(self, backend, clip_id):
        stream = backend.open_stream(self.options)
        finals = [e for e in run_clip(stream, self.clip(clip_id).pcm()) if isinstance(e, Final)]
        stream.close()
        assert all(f.text == "" and not f.words for f in finals)

    def test_finalize_with_no_audio_is_empty(self, backend):
        stream = backend.open_stream(self.options)
        assert stream.finalize().empty
        stream.close()

    def test_streams_do_not_share_state(self, backend):
        a, b = (self.clip(self.single_clip), self.clip(self.long_clip))
        sa, sb = backend.open_stream(self.options), backend.open_stream(self.options)
        pa, pb = a.pcm(), b.pcm()
        for i in range(0, max(pa.size, pb.size), 1600):  # interleaved, as the pool runs them
            if i < pa.size:
                sa.accept(pa[i : i + 1600])
            if i < pb.size:
                sb.accept(pb[i : i + 1600])
        self.check_transcript(sa.finalize().text, a.text)
        self.check_transcript(sb.finalize().text, b.text)
        sa.close()
        sb.close()

    def test_close_releases_streams(self, backend):
        before = backend.open_streams
        streams = [backend.open_stream(self.options) for _ in range(20)]
        assert backend.open_streams == before + 20
        for s in streams:
            s.accept(np.zeros(1600, dtype=np.int16))
            s.close()
            s.close()  # idempotent
        assert backend.open_streams == before
