"""The external full-results post-processor (``STT_POSTPROCESSOR="program args"``), as
kaldi-gstreamer-server's ``full-post-processor``: long-running programs, shared by every
session, that rewrite each final.

Each final goes to a program's stdin as a KGS full result (``protocol.kaldi_gst.full_result``:
``result.hypotheses[0].transcript``, ``word-alignment``, …), one JSON document followed by an
empty line; the program writes the rewritten result back the same way (KGS's own
``sample_full_post_processor.py`` works unchanged). A small pool of programs
(``STT_POSTPROCESSOR_PROCESSES``) takes finals as they come, one at a time each.

A final waits ``STT_POSTPROCESSOR_TIMEOUT_SEC`` at most, queueing included: past that, or when
the program crashes or answers garbage, the final goes out as the backend gave it, with a
``postprocessor_failed`` warning, and a program at fault is restarted. So a hung program
delays no final by more than the timeout, and never blocks an inference thread: this runs on
the event loop, between the job's events and the protocol's encoder.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import time

import structlog

from observability.metrics import Metrics
from protocol.kaldi_gst import from_full_result, full_result
from session.events import Final

log = structlog.get_logger("sttd.postprocess")
MAX_RESULT_BYTES = 1 << 20


class ProgramFailed(Exception):
    pass


class _Program:
    """One running program and the lock that lets one final at a time talk to it."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.lock = asyncio.Lock()
        self.proc: asyncio.subprocess.Process | None = None

    async def exchange(self, document: bytes) -> bytes:
        if self.proc is None or self.proc.returncode is not None:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                limit=MAX_RESULT_BYTES)
        proc = self.proc
        proc.stdin.write(document + b"\n\n")
        await proc.stdin.drain()
        lines: list[bytes] = []
        while True:
            line = await proc.stdout.readline()
            if not line:
                raise ProgramFailed("the program exited")
            if line.strip():
                lines.append(line)
            elif lines:  # the empty line after the document
                return b"".join(lines)

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        self.proc = None


class PostProcessor:
    def __init__(self, command: str, *, timeout_s: float, processes: int,
                 metrics: Metrics) -> None:
        argv = shlex.split(command)
        self._programs = [_Program(argv) for _ in range(processes)]
        self._timeout = timeout_s
        self._metrics = metrics

    async def rewrite(self, final: Final, request_id: str = "") -> tuple[Final, str | None]:
        """The rewritten final, or the original and why not."""
        started = time.monotonic()
        document = json.dumps(full_result(final, final.segment_seq - 1, request_id),
                              ensure_ascii=False).encode()
        program: _Program | None = None
        try:
            async with asyncio.timeout(self._timeout):
                program = await self._idle_program()
                try:
                    answer = await program.exchange(document)
                finally:
                    program.lock.release()
            rewritten = from_full_result(final, json.loads(answer))
        except TimeoutError:
            return self._failed(final, program, "timeout",
                                f"the post-processor gave no answer in {self._timeout:g} s")
        except (ProgramFailed, OSError, ValueError) as exc:
            return self._failed(final, program, "error", f"the post-processor failed: {exc}")
        self._metrics.postprocess_time.observe(time.monotonic() - started)
        return rewritten, None

    async def _idle_program(self) -> _Program:
        """The first program free, waiting for one when all are busy."""
        for program in self._programs:
            if not program.lock.locked():
                await program.lock.acquire()
                return program
        waits = {asyncio.ensure_future(p.lock.acquire()): p for p in self._programs}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # the deadline passed while waiting: hold no lock
            for task, program in waits.items():
                if task.done() and not task.cancelled():
                    program.lock.release()
                else:
                    task.cancel()
            raise
        for task in waits:
            if not task.done():
                task.cancel()
        first, *others = done
        for task in others:  # more than one came free at once: keep one
            waits[task].lock.release()
        return waits[first]

    def _failed(self, final: Final, program: _Program | None, reason: str,
                message: str) -> tuple[Final, str]:
        # The program at fault is restarted for the next final; one that was only waited
        # for (queueing past the deadline) is left alone.
        if program is not None:
            program.kill()
        self._metrics.postprocess_failures.labels(reason).inc()
        log.warning("postprocess.failed", reason=reason, message=message,
                    segment_seq=final.segment_seq)
        return final, message

    def close(self) -> None:
        for program in self._programs:
            program.kill()
