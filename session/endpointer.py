"""Segmentation of a frame stream into speech segments: a pure, clock-free state machine.

Time advances only through the frames fed in; every position is a sample index of session
audio. The endpointer never drops audio it was given during speech: pre-roll frames are
replayed at speech start so the first word is not clipped.

A segment that runs into ``max_segment_ms`` is cut where it hurts least (measured in
docs/benchmarks.md, "Long segments"): its last ``cut_window_ms`` are held back from the
backend (its partials wait meanwhile), so the cut can land on a pause or a quiet frame inside
them and the backend hears the segment end there. At a clear pause the next segment opens as
after any endpoint; elsewhere it opens at once, ``overlap_ms`` before the cut, and the
recognizer drops the words the two finals share. A final that stopped short of its cut (a
decoder may leave a long segment's last seconds out) can have the next segment reopened
earlier, from where its words end (``reach_back``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from session.events import FinalReason

# An unvoiced run this long inside the cut window is a pause: the segment ends there at once
# and nothing is replayed (no word straddles it).
CLEAR_PAUSE_MS = 100


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    sample_rate: int = 16000
    frame_ms: int = 20
    speech_start_ms: int = 60  # voiced run that opens a segment
    silence_ms: int | None = 500  # unvoiced run that closes it; None: only a commit does
    preroll_ms: int = 300  # audio kept from before the voiced run
    max_segment_ms: int = 30000  # force a final this long into a segment
    cut_window_ms: int = 3000  # where before max_segment_ms the cut is sought; 0: hard cuts
    quiet_db: float = 12.0  # a frame this far below the window's median energy is a cut point
    overlap_ms: int = 1000  # audio before a cut (not at a pause) that the next segment replays
    reach_back_ms: int = 5000  # how much before a cut ``reach_back`` can reopen (overlap_ms > 0)

    @property
    def frame_samples(self) -> int:
        return self.sample_rate * self.frame_ms // 1000

    def frames(self, ms: int) -> int:
        return max(1, -(-ms // self.frame_ms))


@dataclass(frozen=True, slots=True)
class SpeechStart:
    start_sample: int


@dataclass(frozen=True, slots=True)
class SpeechAudio:
    pcm: np.ndarray


@dataclass(frozen=True, slots=True)
class SpeechEnd:
    # End of the last voiced frame; of all audio for a forced end; the cut for MAX_SEGMENT.
    end_sample: int
    reason: FinalReason
    # MAX_SEGMENT cut away from a pause: the next segment opens at once at this sample (at
    # most ``overlap_ms`` before the cut: audio both segments hear). None: it opens when
    # speech resumes, never before ``end_sample``.
    replay_from: int | None = None


Action = SpeechStart | SpeechAudio | SpeechEnd
_Frame = tuple[int, np.ndarray, bool]  # start sample, pcm, voiced


class Endpointer:
    def __init__(self, config: EndpointConfig) -> None:
        self._ring: deque[_Frame] = deque()
        # The open segment's latest frames (bounded), the last ``_held`` not yet passed on.
        self._history: deque[_Frame] = deque()
        self._held = 0
        # The ended segment's kept frames, from a max_segment cut until the next frame.
        self._before_cut: list[_Frame] | None = None
        self._cut_sample = 0
        # Every frame since a cut at a pause, while that pause is shorter than an endpoint's:
        # the VAD may call the first soft words after it unvoiced, and a segment would have
        # kept them.
        self._since_cut: list[_Frame] | None = None
        self._quiet_run = 0
        self.reconfigure(config)
        self._position = 0
        self._in_speech = False
        self._voiced_run = 0
        self._silence_run = 0
        self._segment_start = 0
        self._last_voiced_end = 0

    def reconfigure(self, config: EndpointConfig) -> None:
        """New thresholds from the next frame on; the open segment (if any) stays open."""
        if config.frame_ms != getattr(self, "_cfg", config).frame_ms:
            raise ValueError("the frame size of a running endpointer cannot change")
        self._cfg = config
        self._start_frames = config.frames(config.speech_start_ms)
        self._end_frames = (float("inf") if config.silence_ms is None
                            else config.frames(config.silence_ms))
        self._max_samples = config.sample_rate * config.max_segment_ms // 1000
        max_frames = self._max_samples // config.frame_samples
        # A cut stays in the second half of a segment, its replay within the last quarter.
        window = min(config.frames(config.cut_window_ms), max_frames // 2)
        self._window_frames = window if config.cut_window_ms else 0
        overlap = min(config.frames(config.overlap_ms), max_frames // 4)
        self._overlap_frames = overlap if config.overlap_ms else 0
        # overlap_ms 0: no audio is ever heard twice, so no reaching back either.
        reach = config.frames(config.reach_back_ms) if self._overlap_frames else 0
        self._reach_frames = reach if config.reach_back_ms else 0
        self._keep_frames = self._window_frames + self._overlap_frames + self._reach_frames
        self._hold_from = self._max_samples - self._window_frames * config.frame_samples
        self._pause_frames = config.frames(CLEAR_PAUSE_MS)
        preroll = config.preroll_ms // config.frame_ms if config.preroll_ms else 0
        self._ring = deque(self._ring, maxlen=preroll + self._start_frames)

    def clear(self) -> bool:
        """Forget the open segment and the pre-roll; returns whether a segment was open."""
        was_open = self._in_speech
        self._ring.clear()
        self._history.clear()
        self._held = 0
        self._before_cut = None
        self._since_cut = None
        self._in_speech = False
        self._voiced_run = 0
        self._silence_run = 0
        return was_open

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def position(self) -> int:
        """Samples consumed so far."""
        return self._position

    @property
    def segment_start(self) -> int:
        return self._segment_start

    @property
    def silence_frames(self) -> int:
        """Unvoiced frames since the open segment's last voiced one."""
        return self._silence_run

    @property
    def last_voiced_end(self) -> int:
        """End of the open segment's last voiced frame (its end, should the pause go on)."""
        return self._last_voiced_end

    @property
    def holding(self) -> bool:
        """Some of the open segment's audio is held back (the cut window), not passed on."""
        return self._held > 0

    def process(self, frame: np.ndarray, is_speech: bool) -> list[Action]:
        self._before_cut = None
        start = self._position
        self._position += frame.size
        if not self._in_speech:
            return self._process_silence(start, frame, is_speech)
        return self._process_speech(start, frame, is_speech)

    def force_end(self, reason: FinalReason) -> list[Action]:
        """Close the open segment now (commit, end of stream). Nothing happens in silence."""
        self._before_cut = None
        if not self._in_speech:
            return []
        return [*self._pass_on(len(self._history)), self._end(self._position, reason)]

    def reach_back(self, sample: int) -> list[Action]:
        """Right after a max_segment cut (before the next frame): open the next segment at
        ``sample`` instead (no earlier than the audio kept, ``reach_back_ms`` before the cut),
        for a final whose words stopped short of the cut. Returns the actions that replace
        the ones that followed the cut's SpeechEnd; [] when it would open no earlier."""
        if self._before_cut is None or not self._reach_frames:
            return []
        frames = [f for f in self._before_cut if f[0] + f[1].size > sample]
        opened_at = self._segment_start if self._in_speech else self._cut_sample
        if not frames or frames[0][0] >= opened_at:
            return []
        self._before_cut = self._since_cut = None
        self._ring.clear()
        self._in_speech = True
        self._voiced_run = 0
        return self._resume(frames)

    def _process_silence(self, start: int, frame: np.ndarray, is_speech: bool) -> list[Action]:
        self._ring.append((start, frame, is_speech))
        if self._since_cut is not None:
            self._since_cut.append((start, frame, is_speech))
            self._quiet_run = 0 if is_speech else self._quiet_run + 1
            if self._quiet_run >= self._end_frames or len(self._since_cut) > self._keep_frames:
                self._since_cut = None  # a pause that would have ended a segment
        self._voiced_run = self._voiced_run + 1 if is_speech else 0
        if self._voiced_run < self._start_frames:
            return []
        frames = self._since_cut or list(self._ring)
        self._since_cut = None
        self._ring.clear()
        self._in_speech = True
        self._silence_run = 0
        self._last_voiced_end = self._position
        return self._open(frames)

    def _process_speech(self, start: int, frame: np.ndarray, is_speech: bool) -> list[Action]:
        self._history.append((start, frame, is_speech))
        self._held += 1
        if is_speech:
            self._silence_run = 0
            self._last_voiced_end = self._position
        else:
            self._silence_run += 1
        actions = self._release()
        if self._silence_run >= self._end_frames:
            actions += self._pass_on(len(self._history))
            actions.append(self._end(self._last_voiced_end, FinalReason.ENDPOINT))
        elif self._held and self._silence_run >= self._pause_frames:
            actions += self._cut_at_pause()
        elif self._position - self._segment_start >= self._max_samples:
            actions += self._cut()
        while len(self._history) > max(self._keep_frames, self._held):
            self._history.popleft()
        return actions

    def _open(self, frames: list[_Frame]) -> list[Action]:
        """A segment starting with ``frames`` (all held until released)."""
        self._segment_start = frames[0][0] if frames else self._position
        self._history = deque(frames)
        self._held = len(frames)
        return [SpeechStart(self._segment_start), *self._release()]

    def _release(self) -> list[Action]:
        """Pass on the held frames that lie before the segment's cut window."""
        first = len(self._history) - self._held
        n = 0
        while n < self._held and (
                self._history[first + n][0] - self._segment_start < self._hold_from):
            n += 1
        return self._pass_on(first + n)

    def _pass_on(self, upto: int) -> list[Action]:
        """SpeechAudio for the held frames before history index ``upto``."""
        first = len(self._history) - self._held
        if upto <= first:
            return []
        pcm = [self._history[i][1] for i in range(first, upto)]
        self._held -= len(pcm)
        return [SpeechAudio(pcm[0] if len(pcm) == 1 else np.concatenate(pcm))]

    def _cut_at_pause(self) -> list[Action]:
        """End the segment in the middle of the pause now under way (in the cut window): the
        rest of the pause waits as pre-roll for the next segment."""
        n = len(self._history)
        run_start = max(n - self._silence_run, n - self._held)
        at = run_start + (n - run_start) // 2
        cut = self._history[at][0]
        kept = list(self._history)
        actions = [*self._pass_on(at), self._end(cut, FinalReason.MAX_SEGMENT)]
        self._ring.extend(kept[at:])
        self._since_cut, self._quiet_run = kept[at:], n - at  # the rest of the pause
        self._before_cut, self._cut_sample = kept, cut
        return actions

    def _cut(self) -> list[Action]:
        """The segment is ``max_segment_ms`` long: end it at the best point of the held
        window and open the next one at once, replaying from before the cut."""
        n = len(self._history)
        at = self._cut_index(n - self._held)
        cut = self._history[at][0] if at < n else self._position
        replay = max(0, at - self._overlap_frames)  # a clear pause would have cut already
        replay_from = self._history[replay][0] if replay < n else self._position
        actions = [*self._pass_on(at),
                   SpeechEnd(cut, FinalReason.MAX_SEGMENT, replay_from)]
        kept = list(self._history)
        self._before_cut, self._cut_sample = kept, cut
        return actions + self._resume(kept[replay:])

    def _resume(self, frames: list[_Frame]) -> list[Action]:
        """Open a segment on audio already heard (speech goes on in it)."""
        actions = self._open(frames)
        voiced = [i for i, f in enumerate(frames) if f[2]]
        self._silence_run = len(frames) - 1 - voiced[-1] if voiced else len(frames)
        self._last_voiced_end = (frames[voiced[-1]][0] + frames[voiced[-1]][1].size
                                 if voiced else self._segment_start)
        return actions

    def _cut_index(self, first: int) -> int:
        """History index to cut before, among the held frames from ``first``: the middle of
        the longest unvoiced run (the latest of equals), else the quietest frame when it dips
        ``quiet_db`` below the window's median, else the end (a hard cut)."""
        n = len(self._history)
        if first >= n:
            return n
        best, run = (0, n), 0
        for i in range(first, n):
            run = 0 if self._history[i][2] else run + 1
            if run and run >= best[0]:
                best = (run, i + 1 - run)
        if best[0]:
            return best[1] + best[0] // 2
        frames = np.stack([self._history[i][1] for i in range(first, n)]).astype(np.float32)
        db = 10 * np.log10(np.einsum("ij,ij->i", frames, frames) / frames.shape[1] + 1.0)
        quietest = len(db) - 1 - int(np.argmin(db[::-1]))
        if np.median(db) - db[quietest] >= self._cfg.quiet_db:
            return first + quietest
        return n

    def _end(self, end_sample: int, reason: FinalReason) -> SpeechEnd:
        self._in_speech = False
        self._voiced_run = 0
        self._silence_run = 0
        self._history.clear()
        self._held = 0
        return SpeechEnd(end_sample, reason)
