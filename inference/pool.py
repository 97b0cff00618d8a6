"""A fixed pool of synchronous inference threads shared by every session.

Threads block on one ready-queue of jobs (no polling): a session is queued when audio
arrives for it and it is not queued already, so a session is never run by two threads at once
and an idle session costs nothing.
"""

from __future__ import annotations

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
        self._ready: queue.SimpleQueue[Job | object] = queue.SimpleQueue()
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
        self._ready.put(job)

    def stop(self, timeout: float = 5.0) -> None:
        for _ in self._threads:
            self._ready.put(_STOP)
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()

    def _loop(self) -> None:
        while True:
            job = self._ready.get()
            if job is _STOP:
                return
            try:
                again = job.run()
            except BaseException:  # a job must never take a pool thread down with it
                log.exception("inference.job_crashed")
                continue
            if again:
                # Back of the line: sessions with a backlog do not starve the others.
                self._ready.put(job)
