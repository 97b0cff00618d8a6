"""The shared inference pool: finals before partials, one thread per job, survives crashes."""

import threading
import time

from backends.base import before_waiting
from inference.job import Next
from inference.pool import InferencePool


class FakeJob:
    """Records the order of work; returns scripted `Next` values."""

    def __init__(self, name, log, script=(Next.IDLE,), partial_cost=0.0, fail=False):
        self.name, self.log, self.script = name, log, list(script)
        self.partial_cost, self.fail = partial_cost, fail
        self.running = 0
        self.overlap = False

    def _enter(self):
        self.running += 1
        self.overlap |= self.running > 1

    def run(self):
        self._enter()
        try:
            self.log.append(("work", self.name))
            if self.fail:
                raise RuntimeError("boom")
            return self.script.pop(0) if self.script else Next.IDLE
        finally:
            self.running -= 1

    def run_partial(self):
        self._enter()
        time.sleep(self.partial_cost)
        self.log.append(("partial", self.name))
        self.running -= 1
        return Next.IDLE


def wait_until(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_work_runs_before_parked_partials():
    log = []
    pool = InferencePool(threads=1)
    gate = threading.Event()
    blocker = FakeJob("blocker", log)
    blocker.run = lambda: (gate.wait(), log.append(("work", "blocker")), Next.IDLE)[-1]
    pool.start()
    try:
        pool.submit(blocker)  # hold the only thread while we queue the rest
        pool.submit_batch([FakeJob(f"p{i}", log, [Next.PARTIAL]) for i in range(3)])
        pool.submit(FakeJob("final", log))
        gate.set()
        wait_until(lambda: len(log) == 8)
    finally:
        pool.stop()
    order = [f"{k}:{n}" for k, n in log]
    assert order.index("work:final") < order.index("partial:p0"), order
    assert order[-3:] == ["partial:p0", "partial:p1", "partial:p2"]


def test_again_requeues_and_a_crashing_job_does_not_kill_the_pool():
    log = []
    pool = InferencePool(threads=2)
    pool.start()
    try:
        pool.submit(FakeJob("crash", log, fail=True))
        busy = FakeJob("busy", log, [Next.AGAIN, Next.AGAIN, Next.IDLE])
        pool.submit(busy)
        wait_until(lambda: log.count(("work", "busy")) == 3)
        assert pool.alive == 2
        assert not busy.overlap
    finally:
        pool.stop()
    assert pool.alive == 0


def test_a_job_about_to_wait_hands_the_rest_of_its_batch_to_other_threads():
    log = []
    done = {}

    class Waiting(FakeJob):
        def run(self):
            before_waiting()
            time.sleep(0.5)  # a GPU final
            done[self.name] = time.monotonic()
            return Next.IDLE

    class Quick(FakeJob):
        def run(self):
            done[self.name] = time.monotonic()
            return Next.IDLE

    pool = InferencePool(2)
    pool.start()
    try:
        t0 = time.monotonic()
        pool.submit_batch([Waiting("slow", log), Quick("a", log), Quick("b", log)])
        deadline = time.monotonic() + 5
        while len(done) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert set(done) == {"slow", "a", "b"}
        assert done["a"] - t0 < 0.25 and done["b"] - t0 < 0.25  # not behind the wait
        before_waiting()  # off the pool's threads: nothing to do
    finally:
        pool.stop()
