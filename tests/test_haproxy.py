"""Three sttd replicas behind the shipped ``deploy/haproxy/haproxy.cfg``, on loopback.

The config is the shipped file, unedited: its addresses come from the environment. Each
replica is a real ``sttd serve`` process (mock backend, 2 session slots, its own agent port),
so SIGKILL and SIGTERM are the real thing. Three tests share one fleet; each starts from all
three replicas up, empty and at full weight. Run with ``-s`` to see the counts
(docs/scaling.md quotes them).
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from bench.balancer import haproxy_env
from config import REPO_ROOT
from tests.backends.conformance import FIXTURES
from tests.client import Transcript, stream
from tests.server import free_port
from tests.test_cli import BIN

HAPROXY = shutil.which("haproxy")
if HAPROXY is None and os.environ.get("STT_REQUIRE_HAPROXY"):
    raise RuntimeError("haproxy is required here (.ci/run installs Debian's package)")
pytestmark = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")

CONFIG = REPO_ROOT / "deploy" / "haproxy" / "haproxy.cfg"
CAPACITY = 2  # STT_MAX_SESSIONS of each replica
CLIP = FIXTURES["lj_LJ001-0001"]  # 9.7 s of speech, one segment


class Replica:
    """One ``sttd serve`` process; restarted on the same ports, as a rolling update does."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name, self.workdir = name, workdir
        self.port, self.agent_port = free_port(), free_port()
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        env = {"STT_BACKEND": "mock", "STT_VAD": "energy", "STT_LOG_LEVEL": "warning",
               "STT_MAX_SESSIONS": str(CAPACITY), "STT_AGENT_PORT": str(self.agent_port),
               "STT_DRAIN_TIMEOUT_SEC": "20", "PATH": "/usr/bin:/bin"}
        self.starts += 1
        log = (self.workdir / f"{self.name}.{self.starts}.log").open("w")
        self.proc = subprocess.Popen([BIN / "sttd", "serve", "--port", str(self.port)],
                                     cwd=REPO_ROOT, env=env, stdout=log,
                                     stderr=subprocess.STDOUT)

    def ready(self) -> dict | None:
        """/ready's body (200 or 503), None while nothing listens."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ready", timeout=2) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            return json.loads(e.read())
        except OSError:
            return None

    def sessions(self) -> int:
        body = self.ready()
        return body["sessions"] if body else 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.running:
            self.proc.kill()
            self.proc.wait(10)


class Balancer:
    """HAProxy in the foreground (``-db``) on the shipped config."""

    def __init__(self, workdir: Path, replicas: list[Replica]) -> None:
        self.port = free_port()
        self.socket = workdir / "haproxy.sock"
        env = haproxy_env(self.port, self.socket, [(r.port, r.agent_port) for r in replicas])
        self.log = (workdir / "haproxy.log").open("w+")
        self.proc = subprocess.Popen([HAPROXY, "-f", str(CONFIG), "-db"], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def url(self, call_id: str) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stt/ws?sample_rate=16000&call_id={call_id}"

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.socket))
            s.sendall(line.encode() + b"\n")
            return s.makefile().read()

    def servers(self) -> dict[str, tuple[str, int]]:
        """Each replica's HAProxy status (UP, DOWN, DRAIN, …) and current weight."""
        try:
            text = self.command("show stat")
        except OSError:
            return {}
        rows = csv.DictReader(line.removeprefix("# ") for line in text.splitlines() if line)
        return {r["svname"]: (r["status"], int(r["weight"] or 0)) for r in rows
                if r["pxname"] == "sttd" and r["svname"].startswith("r")}

    def retries(self) -> tuple[int, int]:
        """HAProxy's replays so far: (retries, of which redispatched to another replica)."""
        rows = csv.DictReader(line.removeprefix("# ")
                              for line in self.command("show stat").splitlines() if line)
        return next((int(r["wretr"] or 0), int(r["wredis"] or 0)) for r in rows
                    if r["pxname"] == "sttd" and r["svname"] == "BACKEND")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def wait_for(predicate, timeout: float, what: str | Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not in {timeout} s: {what() if callable(what) else what}")
        time.sleep(0.1)


@dataclass
class Fleet:
    replicas: list[Replica]
    balancer: Balancer

    def settle(self) -> None:
        """Every replica running, empty, and UP at full weight in HAProxy."""
        for replica in self.replicas:
            if not replica.running:
                replica.start()
        wait_for(lambda: all(r.ready() and r.ready()["status"] == "ready"
                             for r in self.replicas), 30, "replicas ready")
        if self.balancer.proc.poll() is not None:
            self.balancer.log.seek(0)
            raise RuntimeError(f"haproxy exited: {self.balancer.log.read()}")
        wait_for(lambda: list(self.balancer.servers().values()) == [("UP", 100)] * 3,
                 15, lambda: f"HAProxy sees 3 replicas UP at weight 100: {self.balancer.servers()}")

    def settle_one(self, replica: Replica) -> None:
        """A restarted replica is ready and back UP at full weight."""
        wait_for(lambda: (replica.ready() or {}).get("status") == "ready", 30,
                 f"{replica.name} ready")
        wait_for(lambda: self.balancer.servers().get(replica.name) == ("UP", 100), 15,
                 lambda: f"HAProxy sees {replica.name} UP: {self.balancer.servers()}")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("haproxy")
    replicas = [Replica(f"r{i}", workdir) for i in (1, 2, 3)]
    for replica in replicas:
        replica.start()
    balancer = Balancer(workdir, replicas)
    fleet = Fleet(replicas, balancer)
    try:
        yield fleet
    finally:
        balancer.stop()
        for replica in replicas:
            replica.stop()


def since(before: tuple[int, int], now: tuple[int, int]) -> str:
    retried, redispatched = (n - b for n, b in zip(now, before, strict=True))
    return f"{retried}/{redispatched}"


def report(test: str, **numbers: object) -> None:
    print(f"\n{test}: " + ", ".join(f"{k}={v}" for k, v in numbers.items()))


def complete(t: Transcript) -> bool:
    """Ended normally with every word of the clip in its finals."""
    return t.close_code == 1000 and t.text == CLIP.text


def sent_back(t: Transcript) -> bool:
    """Admitted as the drain began and told at once to reconnect (1012) before any speech
    was heard: no segment was open, so no final is owed and nothing was lost."""
    return (t.close_code == 1012 and not t.of("speech_started") and not t.of("final")
            and t.messages[-1].get("code") == "shutting_down")


def drained(t: Transcript) -> bool:
    """Ended by a drain: the open segment's final (``shutdown``) with the clip's words up to
    there (none when the signal came within the first word), then 1012."""
    finals = t.of("final")
    return (t.close_code == 1012 and bool(finals) and finals[-1]["reason"] == "shutdown"
            and CLIP.text.startswith(t.text) and t.messages[-1].get("code") == "shutting_down")


async def test_capacity_spreads_over_replicas_then_503(fleet):
    fleet.settle()
    lb = fleet.balancer
    held = []
    try:
        for i in range(3 * CAPACITY):
            ws = await connect(lb.url(f"cap{i}"))
            assert json.loads(await ws.recv())["type"] == "ready"
            held.append(ws)
        spread = [r.sessions() for r in fleet.replicas]
        assert spread == [CAPACITY] * 3
        # At once: the agents may not have reported yet, so a full replica may refuse it.
        with pytest.raises(InvalidStatus) as at_once:
            await connect(lb.url("over"))
        # Once every agent said 0 %: HAProxy refuses it itself, with Retry-After.
        await asyncio.to_thread(wait_for, lambda: {w for _, w in lb.servers().values()} == {0},
                                5, "every replica at weight 0")
        with pytest.raises(InvalidStatus) as later:
            await connect(lb.url("over2"))
    finally:
        for ws in held:
            await ws.close()
    for refused in (at_once.value, later.value):
        assert refused.response.status_code == 503
        assert refused.response.headers["Retry-After"] == "1"
    assert b"no replica has a free session slot" in later.value.response.body
    by = "haproxy" if b"no replica" in at_once.value.response.body else "replica"
    report("capacity", admitted=len(held), spread=spread, refused_503=2, first_refused_by=by)


async def test_sigkill_loses_only_that_replicas_sessions(fleet):
    fleet.settle()
    lb, victim = fleet.balancer, fleet.replicas[0]
    pcm = CLIP.pcm()
    retries_before = lb.retries()
    seen: dict[str, tuple[str, int] | None] = {}  # HAProxy's view of the victim when cut

    async def call(i: int) -> tuple[Transcript, Transcript | None, float]:
        """A client that reconnects through HAProxy at once when cut, and sends again."""
        t = await stream(lb.url(f"k{i}"), pcm, realtime=1.0, wait_s=30)
        if complete(t):
            return t, None, 0.0
        cut_at = time.monotonic()
        seen["victim"] = (await asyncio.to_thread(lb.servers)).get(victim.name)
        async with connect(lb.url(f"again{i}")) as ws:  # before HAProxy marks it down
            assert json.loads(await ws.recv())["type"] == "ready"
            admitted_ms = (time.monotonic() - cut_at) * 1000
        return t, await stream(lb.url(f"again{i}"), pcm, wait_s=30), admitted_ms

    calls = []
    for i in range(3):  # one after another: leastconn puts one on each replica
        calls.append(asyncio.create_task(call(i)))
        await asyncio.sleep(0.3)
    await asyncio.sleep(1.5)
    assert [r.sessions() for r in fleet.replicas] == [1, 1, 1]
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait(5)
    results = await asyncio.gather(*calls)
    cut = [(t, again, ms) for t, again, ms in results if again is not None]
    assert len(cut) == 1, "only the killed replica's call was cut"
    first, again, reconnect_ms = cut[0]
    assert first.close_code == 1006 and not first.of("final")
    assert sum(complete(t) for t, _, _ in results) == 2, "the others got every final"
    assert complete(again), "the reconnect landed on a live replica"
    report("sigkill", admitted=4, sessions_cut=len(cut),
           others_finals_lost=sum(not complete(t) for t, _, _ in results) - len(cut),
           reconnected_complete=int(complete(again)), reconnect_admitted_ms=round(reconnect_ms),
           haproxy_retried_same_or_other=since(retries_before, lb.retries()),
           victim_in_haproxy_at_reconnect="/".join(map(str, seen["victim"])))


async def test_rolling_restart_drains_every_session_with_its_final(fleet):
    fleet.settle()
    lb = fleet.balancer
    pcm = CLIP.pcm()
    retries_before = lb.retries()
    outcomes: list[tuple[float, Transcript, float]] = []  # (placed, what it got, ended)
    refused = 0
    rolling = True

    async def caller(n: int) -> None:
        nonlocal refused
        k = 0
        while rolling:
            k += 1
            placed = time.monotonic()
            try:
                t = await stream(lb.url(f"roll{n}.{k}"), pcm, realtime=1.0, wait_s=30)
            except InvalidStatus:
                refused += 1
                await asyncio.sleep(0.5)
                continue
            outcomes.append((placed, t, time.monotonic()))

    # Four calls on six slots: with one replica out, the other two hold all four.
    callers = [asyncio.create_task(caller(n)) for n in range(4)]
    at_sigterm, out = [], []  # sessions on each replica when signalled; when it was out
    for replica in fleet.replicas:
        await asyncio.to_thread(wait_for, lambda r=replica: r.sessions() > 0, 15,
                                f"{replica.name} has a session")
        at_sigterm.append(replica.sessions())
        signalled = time.monotonic()
        replica.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(replica.proc.wait, 25) == 0
        replica.start()  # the same ports, as a rolling update's new pod
        await asyncio.to_thread(fleet.settle_one, replica)
        out.append((signalled, time.monotonic()))
    rolling = False
    await asyncio.gather(*callers)
    calls = [t for _, t, _ in outcomes]
    lost = [t for t in calls if not (complete(t) or drained(t) or sent_back(t))]
    during = sum(any(a <= placed <= b for a, b in out) for placed, _, _ in outcomes)
    # A call whose clip ended as its replica was signalled completes on its own (its final
    # is an eos one): it was open at the SIGTERM and still got its final.
    finished_there = sum(complete(t) and any(placed <= a <= ended for a, _ in out)
                         for placed, t, ended in outcomes)
    n_drained = sum(map(drained, calls))
    report("rolling_restart", sessions=len(calls), completed=sum(map(complete, calls)),
           drained_with_final=n_drained, sessions_at_each_sigterm=at_sigterm,
           sent_back_before_speech=sum(map(sent_back, calls)),
           placed_while_a_replica_was_out=during, lost=len(lost), refused_503=refused,
           haproxy_retried_same_or_other=since(retries_before, lb.retries()))
    assert not lost, [(t.close_code, t.messages[-2:]) for t in lost]
    # Every session open at a SIGTERM got its final, or (admitted as the drain began, no
    # speech yet) was told at once to reconnect.
    assert n_drained + sum(map(sent_back, calls)) + finished_there >= sum(at_sigterm)
    assert during > 0 and refused == 0  # placed on the others; a drainer's 503 was retried
