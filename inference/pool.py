"""A fixed pool of synchronous inference threads shared by every session.

Threads block on one ready-queue (no polling). A session is queued when audio arrives for it
and it is not queued already, so a session is never run by two threads at once and an idle
session costs nothing. The event loop hands jobs over in batches, one per loop iteration:
waking a thread (and handing it the GIL) per audio frame would cost more than the work.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Protocol

import structlog

log = structlog.get_logger("sttd.inference")


class Job(Protocol):
    def run(self) -> bool:
        """Do the queued work; True when more arrived meanwhile and the job must run again."""


_STOP = object()


class InferencePool:
    def __init__(self, threads: int, name: str = "sttd-infer") -> None:
        self._size = threads
        self._name = name
        self._ready: queue.SimpleQueue[list[Job] | object] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    @property
    def depth(self) -> int:
        """Sessions waiting for a thread."""
        return self._ready.qsize()

    @property
    def alive(self) -> int:
        return sum(t.is_alive() for t in self._threads)

    def start(self) -> None:
        for i in range(self._size):
            t = threading.Thread(target=self._loop, name=f"{self._name}-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def submit(self, job: Job) -> None:
        """Thread-safe; prefer a ``LoopBatcher`` on the event loop."""
        self._ready.put([job])

    def submit_batch(self, jobs: list[Job]) -> None:
        self._ready.put(jobs)

    def stop(self, timeout: float = 5.0) -> None:
        for _ in self._threads:
            self._ready.put(_STOP)
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()

    def _loop(self) -> None:
        while True:
            batch = self._ready.get()
            if batch is _STOP:
                return
            again = [job for job in batch if self._run(job)]
            if again:
                # Back of the line: sessions with a backlog do not starve the others.
                self._ready.put(again)

    @staticmethod
    def _run(job: Job) -> bool:
        try:
            return job.run()
        except BaseException:  # a job must never take a pool thread down with it
            log.exception("inference.job_crashed")
            return False


class LoopBatcher:
    """Collects jobs made ready during one event-loop iteration and submits them together."""

    def __init__(self, pool: InferencePool) -> None:
        self._pool = pool
        self._pending: list[Job] = []

    def schedule(self, job: Job) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(job)

    def _flush(self) -> None:
        jobs, self._pending = self._pending, []
        self._pool.submit_batch(jobs)
