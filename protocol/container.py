"""Compressed and containerised audio (Ogg/Opus, WebM, MP3, FLAC, WAV, M4A, …), decoded by
FFmpeg through PyAV while the bytes arrive.

FFmpeg's demuxers pull their input, so each decoder runs them on a thread of its own that
blocks on a pipe until the next bytes come. Decoded audio (16 kHz mono s16, through
``protocol.pcm``) comes back through a bounded janus queue: when the consumer is slow the
demuxer waits, so a tiny file that expands to hours of audio never sits in memory. When the
demuxer needs more input it says so (``_STARVED``), which ends one ``feed``.

Nothing in a header is trusted: duration is counted as samples are decoded, and a sample rate
outside 8–384 kHz is refused before anything is decoded. Decoders with float output (float
PCM, and lossy codecs) can produce NaN or infinite samples: they are refused as on the raw
``pcm_f32le`` path, checked once per handed-over piece (NaN and inf survive downmixing and
resampling), which costs about 4 µs per second of audio; integer formats are not checked.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import AsyncIterator

import janus
import numpy as np

from protocol.common import ProtocolError
from protocol.pcm import MAX_RATE, MIN_RATE, TARGET_RATE, Resampler, downmix, frame_to_float, to_s16
from session.events import ErrorCode

CONTAINER_CODECS = ("auto", "ogg", "webm", "mp3", "flac", "wav")
_FORMATS = {"auto": None, "ogg": "ogg", "webm": "matroska", "mp3": "mp3", "flac": "flac",
            "wav": "wav", "mp4": "mov"}
_STARVED = object()  # the demuxer waits for input
_END = object()  # input exhausted and every frame decoded
_CHUNK_SAMPLES = TARGET_RATE  # decoded audio is handed over in pieces of up to 1 s
_SPOOL_MEMORY = 8 * 1024 * 1024  # seekable inputs (MP4) beyond this spill to a temp file
_ID3_HEADER = 10


class AudioTooLong(ProtocolError):
    def __init__(self, seconds: float) -> None:
        super().__init__(ErrorCode.AUDIO_TOO_LONG,
                         f"audio is longer than the limit of {seconds:g} s")


class _Pipe:
    """A blocking byte pipe FFmpeg reads from (a file-like object with ``read`` only)."""

    def __init__(self, on_starved) -> None:
        self._chunks: list[bytes] = []
        self._cond = threading.Condition()
        self._eof = False
        self._on_starved = on_starved

    def feed(self, data: bytes) -> None:
        with self._cond:
            self._chunks.append(data)
            self._cond.notify()

    def end(self) -> None:
        with self._cond:
            self._eof = True
            self._cond.notify()

    def read(self, size: int = -1) -> bytes:
        with self._cond:
            if not self._chunks and not self._eof:
                self._cond.release()
                try:
                    self._on_starved()
                finally:
                    self._cond.acquire()
                self._cond.wait_for(lambda: self._chunks or self._eof)
            if not self._chunks:
                return b""
            data = self._chunks.pop(0)
            if 0 <= size < len(data):
                data, rest = data[:size], data[size:]
                self._chunks.insert(0, rest)
            return data


class ContainerDecoder:
    """One stream's decoder. ``fmt``: a name of ``CONTAINER_CODECS`` or ``mp4``; ``auto``
    probes. ``seekable`` collects the whole input first (MP4/M4A keep their index at the end)."""

    def __init__(self, fmt: str = "auto", *, max_seconds: float = 0, seekable: bool = False):
        self._format = _FORMATS[fmt]
        self._max_seconds = max_seconds
        self._max_samples = int(max_seconds * TARGET_RATE) or None
        self._out: janus.Queue = janus.Queue(maxsize=4)
        self._spool = (tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY) if seekable
                       else None)  # closed by close() before the thread starts, by it after
        self._pipe = _Pipe(self._starved)
        self._head = b""  # the input's first bytes, until an ID3v2 header can be recognised
        self._id3_end = 0  # where a leading ID3v2 tag says it ends (0: none)
        self.received_bytes = 0
        self._pending: list[np.ndarray] = []
        self._pending_samples = 0
        self.decoded_samples = 0
        self.input_rate: int | None = None
        self._floats = False  # the decoder gives float samples (which may be NaN or inf)
        self._thread = threading.Thread(target=self._run, name="sttd-demux", daemon=True)
        self._started = False
        self._done = False

    async def feed(self, data: bytes) -> AsyncIterator[bytes]:
        """Hand over input; yields the audio decodable so far."""
        if self._done or not data:
            return
        self.received_bytes += len(data)
        if len(self._head) < _ID3_HEADER:
            self._head += data[:_ID3_HEADER]
            self._id3_end = _id3_end(self._head)
        if self._spool is not None:
            self._spool.write(data)
            return
        self._pipe.feed(data)
        self._start()
        async for pcm in self._collect():
            yield pcm

    async def finish(self) -> AsyncIterator[bytes]:
        """End of input: yields the rest of the audio."""
        if self._done:
            return
        if self._spool is not None:
            self._spool.seek(0)
        self._pipe.end()
        self._start()
        async for pcm in self._collect(until_end=True):
            yield pcm
        self._done = True
        if self._id3_end > self.received_bytes:
            # FFmpeg skips a leading ID3v2 tag by the length the tag claims: a header that
            # claims more than the whole input swallows the audio after it without an error.
            raise ProtocolError(
                ErrorCode.INVALID_AUDIO,
                f"the ID3v2 tag at the start claims {self._id3_end} bytes, more than the "
                f"{self.received_bytes} sent: the audio after it cannot be found",
            )

    def close(self) -> None:
        """Stop the demuxer thread wherever it is (the session is over) and free the spool.
        A started thread closes the spool itself once FFmpeg has let go of it."""
        self._done = True
        self._pipe.end()
        self._out.shutdown(immediate=True)
        if not self._started and self._spool is not None:
            self._spool.close()

    def _start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    async def _collect(self, until_end: bool = False) -> AsyncIterator[bytes]:
        get = self._out.async_q.get
        while True:
            item = await get()
            if item is _STARVED:
                if until_end:
                    continue
                return
            if item is _END:
                self._done = True
                return
            if isinstance(item, Exception):
                self._done = True
                raise item
            yield item

    # -- demuxer thread ----------------------------------------------------------------------

    def _put(self, item) -> None:
        self._out.sync_q.put(item)  # blocks while the consumer catches up

    def _starved(self) -> None:
        self._hand_over()
        self._put(_STARVED)

    def _hand_over(self) -> None:
        if self._pending:
            pcm = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
            self._pending, self._pending_samples = [], 0
            if self._floats and not np.isfinite(pcm).all():
                raise ProtocolError(ErrorCode.INVALID_AUDIO,
                                    "the audio holds NaN or infinite float samples")
            self._put(to_s16(pcm).tobytes())

    def _run(self) -> None:
        try:
            self._demux()
            self._hand_over()
            self._put(_END)
        except (janus.SyncQueueShutDown, RuntimeError):
            return  # closed by the consumer
        except ProtocolError as exc:
            self._offer_error(exc)
        except Exception as exc:  # FFmpeg's errors, and anything a hostile file provokes
            self._offer_error(_as_protocol_error(exc, self.decoded_samples / TARGET_RATE))
        finally:
            if self._spool is not None:
                self._spool.close()  # its deleted temp file (inputs over 8 MB) goes with it

    def _offer_error(self, exc: ProtocolError) -> None:
        try:
            self._put(exc)
        except (janus.SyncQueueShutDown, RuntimeError):
            pass

    def _demux(self) -> None:
        import av

        source = self._spool if self._spool is not None else self._pipe
        try:
            container = av.open(source, mode="r", format=self._format, timeout=None)
        except av.error.FFmpegError:
            what = f"{self._format} audio" if self._format else "a recognised audio format"
            raise ProtocolError(ErrorCode.UNSUPPORTED_AUDIO, f"the data is not {what}") from None
        with container:
            if not container.streams.audio:
                raise ProtocolError(ErrorCode.UNSUPPORTED_AUDIO, "the data holds no audio stream")
            stream = container.streams.audio[0]
            resampler: Resampler | None = None
            for packet in container.demux(stream):
                for frame in packet.decode():
                    rate = frame.sample_rate
                    if resampler is None or rate != resampler.rate:
                        if not MIN_RATE <= rate <= MAX_RATE:
                            raise ProtocolError(
                                ErrorCode.UNSUPPORTED_AUDIO,
                                f"sample rate {rate} Hz is outside {MIN_RATE}–{MAX_RATE} Hz",
                            )
                        if resampler is not None:
                            self._keep(resampler.flush())
                        resampler = Resampler(rate)
                        self.input_rate = rate
                    if not self._floats and frame.format.name[:3] in ("flt", "dbl"):
                        self._floats = True
                    samples, channels = frame_to_float(frame)
                    self._keep(resampler.process(downmix(samples, channels)))
            if resampler is not None:
                self._keep(resampler.flush())

    def _keep(self, mono: np.ndarray) -> None:
        if not mono.size:
            return
        self.decoded_samples += mono.size
        if self._max_samples and self.decoded_samples > self._max_samples:
            raise AudioTooLong(self._max_seconds)
        self._pending.append(mono)
        self._pending_samples += mono.size
        if self._pending_samples >= _CHUNK_SAMPLES:
            self._hand_over()


def _id3_end(head: bytes) -> int:
    """Where a leading ID3v2 tag claims to end (header, body, footer), or 0."""
    if (len(head) < _ID3_HEADER or head[:3] != b"ID3" or not 2 <= head[3] <= 4
            or any(b & 0x80 for b in head[6:10])):
        return 0
    size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]  # synchsafe
    footer = _ID3_HEADER if head[3] == 4 and head[5] & 0x10 else 0
    return _ID3_HEADER + size + footer


def _as_protocol_error(exc: Exception, at_seconds: float = 0.0) -> ProtocolError:
    import av

    where = f" after {at_seconds:.1f} s" if at_seconds else ""
    if isinstance(exc, av.error.FFmpegError):
        reason = exc.strerror or type(exc).__name__
        if isinstance(exc, av.error.PatchWelcomeError) and at_seconds:
            reason += (" (the stream changes format mid-way in a way FFmpeg cannot follow, "
                       "such as a chained Ogg whose sample rate or channels change; send the "
                       "parts as separate files)")
    else:
        reason = str(exc)
    return ProtocolError(ErrorCode.INVALID_AUDIO, f"could not decode the audio{where}: {reason}")
