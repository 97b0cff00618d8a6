"""A fixed pool of synchronous inference threads shared by every session.

Threads block on one ready-queue (no polling). A session is queued when audio arrives for it
and it is not queued already, so a session is never run by two threads at once and an idle
session costs nothing. The event loop hands jobs over in batches, one per loop iteration:
waking a thread (and handing it the GIL) per audio frame would cost more than the work.

Three queues, in this order: live work (audio, endpoints, finals of live sessions), parked
partials, then bulk work (file uploads, which are read as fast as they are recognised and so
always have work). Bulk work never holds every thread (one is always left for live finals),
and a bulk batch that has waited ``bulk_max_wait`` goes first, so uploads slow down under
live load but never stop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from typing import Protocol

import structlog

from backends.base import set_waiting_hook
from inference.job import Next

log = structlog.get_logger("sttd.inference")


class Job(Protocol):
    def run(self) -> Next:
        """Recognise queued input; say what to do with the job next."""

    def run_partial(self) -> Next:
        """Compute a due partial on the latest audio."""

    def time_out(self, seconds: float) -> None:
        """The watchdog gave up on a call that ran longer than ``seconds``."""

    @property
    def partial_state(self) -> str:
        """"parked" (waiting for a partial), "busy" (queued or running: new audio came) or
        "idle"."""


_STOP = object()
_current = threading.local()  # the batch an inference thread is running


class InferencePool:
    """Two queues: work (audio, endpoints, finals) always before partials, so finals keep
    their latency under load while the partial cadence stretches."""

    def __init__(self, threads: int, name: str = "sttd-infer", job_timeout: float = 0.0,
                 bulk_max_wait: float = 1.0) -> None:
        self._size = threads
        self._job_timeout = job_timeout  # 0: no watchdog
        self._name = name
        self._work: deque[list[Job]] = deque()
        # Jobs waiting for a partial, oldest first. A parked job that new audio promotes to
        # the work queue keeps its place and parks there again, so under load every stream
        # gets its turn (round robin), not whichever parked last before a thread freed.
        self._partials: dict[Job, None] = {}
        self._bulk: deque[tuple[float, list[Job]]] = deque()  # (queued at, batch)
        self._bulk_max_wait = bulk_max_wait
        self._bulk_slots = max(1, threads - 1)
        self._bulk_running = 0
        self._cv = threading.Condition(threading.Lock())
        self._stopping = False
        self._threads: list[threading.Thread] = []
        # With more than one thread, one is always left for work: a final never waits for
        # a partial decode to finish.
        self._partial_slots = max(1, threads - 1)
        self._partials_running = 0
        # thread → (its batch, index of the running job, started): what the watchdog
        # inspects. Written without the lock (one dict store per run, atomic under the GIL);
        # the watchdog re-checks under the lock before acting.
        self._running: dict[threading.Thread, tuple[list[Job], int, float]] = {}
        self._abandoned: set[threading.Thread] = set()
        self.timeouts = 0
        self._spawned = 0

    @property
    def depth(self) -> int:
        """Jobs waiting for a thread (work batches' jobs plus parked partials)."""
        return (sum(len(b) for b in list(self._work)) + len(self._partials)
                + sum(len(b) for _, b in list(self._bulk)))

    @property
    def work_waiting(self) -> bool:
        """Live work (audio, endpoints) queued for a thread: no time for guesses."""
        return bool(self._work)

    @property
    def alive(self) -> int:
        return sum(t.is_alive() and t not in self._abandoned for t in self._threads)

    def start(self) -> None:
        self._stopping = False
        for _ in range(self._size):
            self._spawn()
        if self._job_timeout > 0:
            threading.Thread(target=self._watch, name=f"{self._name}-watchdog",
                             daemon=True).start()

    def _spawn(self) -> None:
        t = threading.Thread(target=self._loop, name=f"{self._name}-{self._spawned}",
                             daemon=True)
        self._spawned += 1
        t.start()
        self._threads.append(t)

    def submit(self, job: Job) -> None:
        """Thread-safe; prefer a ``LoopBatcher`` on the event loop."""
        self.submit_batch([job])

    def submit_batch(self, jobs: list[Job], bulk: bool = False) -> None:
        with self._cv:
            if bulk:
                self._bulk.append((time.monotonic(), jobs))
            else:
                self._work.append(jobs)
            self._cv.notify()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()

    def _loop(self) -> None:
        set_waiting_hook(self._hand_off_rest)
        while True:
            with self._cv:
                while not (self._work or self._stopping or self._partial_ready()
                           or self._bulk_ready()):
                    self._cv.wait()
                if self._stopping and not (self._work or self._bulk):
                    return  # queued work (a session's close and its accounting) runs first
                partial = bulk = False
                if self._bulk_ready() and (
                        self._stopping or time.monotonic() - self._bulk[0][0]
                        >= self._bulk_max_wait):
                    batch, bulk = self._bulk.popleft()[1], True  # waited long enough
                elif self._work:
                    batch = self._work.popleft()
                elif self._partial_ready():
                    batch, partial = [self._take_partial()], True
                    self._partials_running += 1
                elif self._bulk_ready():
                    batch, bulk = self._bulk.popleft()[1], True
                else:
                    return  # stopping: the bulk work left runs on the threads holding its slots
                if bulk:
                    self._bulk_running += 1
            _current.bulk = bulk
            again, parked = self._run_batch(batch, partial)
            me = threading.current_thread()
            if me in self._abandoned:  # the watchdog replaced this thread and its batch
                with self._cv:
                    self._abandoned.discard(me)
                    if partial:
                        self._partials_running -= 1
                    if bulk:
                        self._bulk_running -= 1
                    self._threads.remove(me)
                return
            if not (partial or bulk or again or parked):
                continue
            with self._cv:
                if partial:
                    self._partials_running -= 1
                if bulk:
                    self._bulk_running -= 1
                if again and bulk:  # back of the line: a backlog does not starve others
                    self._bulk.append((time.monotonic(), again))
                elif again:
                    self._work.append(again)
                for job in parked:
                    self._partials.setdefault(job, None)  # a returning job keeps its place
                # Wake only as many threads as there is new work for (this one loops anyway).
                wake = bool(again) + len(parked) + partial + bulk - 1
                if wake > 0:
                    self._cv.notify(wake)

    def _partial_ready(self) -> bool:
        return self._partials_running < self._partial_slots and self._first_parked() is not None

    def _first_parked(self) -> Job | None:
        """The job that has waited longest for a partial; forgets jobs that no longer wait
        (under the lock)."""
        gone = []
        found = None
        for job in self._partials:
            state = getattr(job, "partial_state", "parked")
            if state == "parked":
                found = job
                break
            if state == "idle":
                gone.append(job)
        for job in gone:
            del self._partials[job]
        return found

    def _take_partial(self) -> Job:
        job = self._first_parked()
        del self._partials[job]
        return job

    def _bulk_ready(self) -> bool:
        return bool(self._bulk) and self._bulk_running < self._bulk_slots

    def _run_batch(self, batch: list[Job], partial: bool) -> tuple[list[Job], list[Job]]:
        again: list[Job] = []
        parked: list[Job] = []
        me = threading.current_thread()
        _current.batch = batch
        for n, job in enumerate(batch):  # _hand_off_rest may shorten the batch as it runs
            if me in self._abandoned:
                break  # the watchdog handed the rest of the batch to another thread
            _current.index = n
            nxt = self._run(batch, n, job.run_partial if partial else job.run)
            if nxt is Next.PARTIAL and not partial and self._take_partial_slot_if_idle():
                # Nothing waits: compute the partial now rather than round-trip the queue.
                try:
                    nxt = self._run(batch, n, job.run_partial)
                finally:
                    with self._cv:
                        self._partials_running -= 1
            if nxt is Next.AGAIN:
                again.append(job)
            elif nxt is Next.PARTIAL:
                parked.append(job)
        return again, parked

    def _hand_off_rest(self) -> None:
        """A backend is about to wait on work elsewhere (``before_waiting``): the rest of
        this thread's batch goes back to the front of the queue for other threads now, so
        sessions queued behind this one are not delayed by its wait."""
        batch, index = _current.batch, _current.index
        with self._cv:  # the watchdog hands batches on under this lock too
            if threading.current_thread() in self._abandoned:
                return  # the watchdog has handed the rest on already
            rest = batch[index + 1 :]
            if not rest:
                return
            del batch[index + 1 :]
            # They were queued before anything behind them.
            if getattr(_current, "bulk", False):
                self._bulk.appendleft((time.monotonic(), rest))
            else:
                self._work.appendleft(rest)
            self._cv.notify()

    def _take_partial_slot_if_idle(self) -> bool:
        with self._cv:
            if (self._work or self._partials_running >= self._partial_slots
                    or self._first_parked() is not None):
                return False
            self._partials_running += 1
            return True

    def _run(self, batch: list[Job], index: int, step) -> Next:
        me = threading.current_thread()
        watched = self._job_timeout > 0
        if watched:
            self._running[me] = (batch, index, time.monotonic())
        try:
            return step()
        except BaseException:  # a job must never take a pool thread down with it
            log.exception("inference.job_crashed")
            return Next.IDLE
        finally:
            if watched:
                self._running.pop(me, None)

    def _watch(self) -> None:
        """Once a second: a backend call running past the timeout fails its session, its
        thread is written off (Python cannot stop it) and replaced, and the rest of its
        batch goes to the other threads, so one hung stream cannot stall the others."""
        while not self._stopping:
            time.sleep(min(1.0, self._job_timeout / 4))
            now = time.monotonic()
            with self._cv:
                stuck = []
                for thread, (batch, index, started) in list(self._running.items()):
                    if now - started <= self._job_timeout or thread in self._abandoned:
                        continue
                    self._abandoned.add(thread)
                    self._running.pop(thread, None)
                    self.timeouts += 1
                    rest = batch[index + 1 :]
                    if rest:
                        self._work.append(rest)
                    self._spawn()
                    self._cv.notify(1 + bool(rest))
                    stuck.append((thread, batch[index]))
            for thread, job in stuck:
                log.error("inference.job_timed_out", thread=thread.name,
                          timeout_s=self._job_timeout)
                try:
                    job.time_out(self._job_timeout)
                except Exception:
                    log.exception("inference.time_out_failed")


class LoopBatcher:
    """Collects jobs made ready during one event-loop iteration and submits them together
    (``bulk``: to the pool's bulk queue, for file uploads)."""

    def __init__(self, pool: InferencePool, bulk: bool = False) -> None:
        self._pool = pool
        self._bulk = bulk
        self._pending: list[Job] = []

    def schedule(self, job: Job) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(job)

    def _flush(self) -> None:
        jobs, self._pending = self._pending, []
        self._pool.submit_batch(jobs, bulk=self._bulk)
