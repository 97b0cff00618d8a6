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


def test_live_work_goes_before_bulk_work_and_bulk_never_holds_every_thread():
    log = []
    pool = InferencePool(threads=2, bulk_max_wait=60.0)
    gate = threading.Event()
    started = threading.Event()

    def hold():
        started.set()
        gate.wait()
        log.append(("work", "bulk-long"))
        return Next.IDLE

    long_upload = FakeJob("bulk-long", log)
    long_upload.run = hold
    pool.start()
    try:
        pool.submit_batch([long_upload], bulk=True)
        started.wait(5)
        # The other bulk job must wait: one thread is always left for live work.
        pool.submit_batch([FakeJob("bulk-2", log)], bulk=True)
        time.sleep(0.1)
        assert log == []
        pool.submit(FakeJob("live", log))
        wait_until(lambda: ("work", "live") in log)
        assert ("work", "bulk-2") not in log
        gate.set()
        wait_until(lambda: ("work", "bulk-2") in log)
    finally:
        gate.set()
        pool.stop()


def test_bulk_work_that_waited_long_enough_goes_before_live_work():
    log = []
    pool = InferencePool(threads=1, bulk_max_wait=0.05)
    gate = threading.Event()
    blocker = FakeJob("blocker", log)
    blocker.run = lambda: (gate.wait(), log.append(("work", "blocker")), Next.IDLE)[-1]
    pool.start()
    try:
        pool.submit(blocker)
        pool.submit_batch([FakeJob("upload", log)], bulk=True)
        time.sleep(0.1)  # the upload has now waited past bulk_max_wait
        pool.submit(FakeJob("live", log))
        gate.set()
        wait_until(lambda: len(log) == 3)
        assert [name for _, name in log] == ["blocker", "upload", "live"]
    finally:
        gate.set()
        pool.stop()


def test_a_live_backlog_does_not_stop_an_upload():
    """Live work that always comes back (AGAIN) cannot starve bulk work forever."""
    log = []
    pool = InferencePool(threads=1, bulk_max_wait=0.02)
    busy = FakeJob("live", log, [Next.AGAIN] * 10_000)
    pool.start()
    try:
        pool.submit(busy)
        pool.submit_batch([FakeJob("upload", log)], bulk=True)
        wait_until(lambda: ("work", "upload") in log)
    finally:
        busy.script.clear()
        pool.stop()


def test_a_parked_job_that_is_busy_keeps_its_place_and_one_gone_idle_is_forgotten():
    log = []
    pool = InferencePool(threads=2)  # one partial slot
    slow = FakeJob("slow", log, [Next.PARTIAL], partial_cost=0.3)
    a, b, gone = (FakeJob(n, log, [Next.PARTIAL]) for n in ("a", "b", "gone"))
    a.partial_state = "busy"  # new audio promoted it: its work runs first, then it parks
    gone.partial_state = "idle"  # its segment ended: no partial wanted any more
    pool.start()
    try:
        pool.submit(slow)  # its partial holds the partial slot
        wait_until(lambda: slow.running)
        pool.submit_batch([a, gone, b])
        wait_until(lambda: ("partial", "b") in log)
        assert ("partial", "a") not in log and ("partial", "gone") not in log
        a.partial_state = "parked"
        pool.submit(FakeJob("c", log))  # any work wakes the pool
        wait_until(lambda: ("partial", "a") in log)
        assert [e for e in log if e[0] == "partial"] == [
            ("partial", "slow"), ("partial", "b"), ("partial", "a")]
        wait_until(lambda: pool.depth == 0)
    finally:
        pool.stop()
