"""The shipped dashboard and alert rules, evaluated by a real Prometheus scraping a real sttd.

Prometheus (Debian's package, installed by ``.ci/run``) scrapes the server every second and
evaluates a copy of ``deploy/prometheus/alerts.yml`` whose ``for:`` durations are cut to 0 s
(the expressions are the shipped ones). Real WebSocket streams, a bad handshake, a protocol
error and a batch upload make the load; then every panel query of the dashboard must return
series, the rate panels must be non-zero, and the capacity and error alerts must fire when
induced.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from config import REPO_ROOT
from tests.backends.conformance import FIXTURES
from tests.client import stream
from tests.server import RunningServer, free_port

PROMETHEUS = shutil.which("prometheus")
if PROMETHEUS is None and os.environ.get("STT_REQUIRE_PROMETHEUS"):
    raise RuntimeError("prometheus is required here (.ci/run installs Debian's package)")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed")

DEPLOY = REPO_ROOT / "deploy"
DASHBOARD = json.loads((DEPLOY / "grafana" / "sttd-dashboard.json").read_text())
RATE_PANELS_NONZERO = {  # panels that must move while streams run
    "Sessions per second: ended by outcome, opened by protocol", "Audio seconds per second",
    "Real-time factor by backend (inference s per audio s)", "Finals per second, by reason",
    "Process CPU (cores)",
}


class Prometheus:
    """Prometheus scraping ``target_port`` (job ``sttd``), or each ``(port, labels)`` of
    ``targets``: the labels go on the target, and ``relabel_configs`` (YAML flow text) run on
    them, as Kubernetes service discovery's ``__meta_kubernetes_*`` labels are relabelled."""

    def __init__(self, workdir: Path, target_port: int | None = None, *,
                 targets: list[tuple[int, dict[str, str]]] | None = None,
                 relabel_configs: str = "[]") -> None:
        self.port = free_port()
        targets = targets if targets is not None else [(target_port, {})]
        rules = (DEPLOY / "prometheus" / "alerts.yml").read_text()
        (workdir / "alerts.yml").write_text(re.sub(r"for: \S+", "for: 0s", rules))
        statics = ", ".join(f"{{targets: ['127.0.0.1:{port}'], labels: {json.dumps(labels)}}}"
                            for port, labels in targets)
        (workdir / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "rule_files: [alerts.yml]\n"
            "scrape_configs:\n"
            "  - job_name: sttd\n"
            f"    static_configs: [{statics}]\n"
            f"    relabel_configs: {relabel_configs}\n"
        )
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(self.url("/-/ready"), timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("prometheus did not start") from None
                time.sleep(0.2)
        # Counters must be seen before the load starts, or their first increase is invisible.
        while len([r for r in self.query('up{job="sttd"}') if r["value"][1] == "1"]) < len(
                targets):
            if time.monotonic() > deadline:
                raise RuntimeError("prometheus never scraped sttd")
            time.sleep(0.2)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def query(self, expr: str) -> list[dict]:
        qs = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(self.url(f"/api/v1/query?{qs}"), timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def firing(self) -> set[str]:
        return {a["metric"]["alertname"] for a in self.query('ALERTS{alertstate="firing"}')}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def panel_queries() -> list[tuple[str, str]]:
    out = []
    for panel in DASHBOARD["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "10s")
            out.append((panel["title"], expr.replace("$instance", ".*")))
    return out


def alert_rules() -> list[tuple[str, str]]:
    import yaml

    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


@pytest.fixture
def stack(tmp_path):
    server = RunningServer(max_sessions=4)
    server.start()
    prom = Prometheus(tmp_path, server.port)
    yield server, prom
    prom.stop()
    server.stop()


async def wait_for(predicate, within_s: float = 20.0):
    deadline = time.monotonic() + within_s
    while not (result := predicate()):
        if time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.5)
    return result


async def test_every_panel_and_alert_query_returns_data_under_real_load(stack):
    server, prom = stack
    clip = FIXTURES["ep_ls_three_turns_pause4"].pcm()

    async def load(seconds: float):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await asyncio.gather(*(stream(server.ws_url(), clip, realtime=8.0)
                                   for _ in range(2)))

    loader = asyncio.create_task(load(14))
    await asyncio.sleep(1)
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus):  # refused at the handshake: a rejection
        await stream(server.ws_url(sample_rate=1), b"")
    for _ in range(12):  # odd byte counts: invalid_audio errors, for the error-ratio alert
        await stream(server.ws_url(), b"\0" * 3)
    import httpx

    async with httpx.AsyncClient(base_url=server.http) as client:
        wav = (REPO_ROOT / "references" / "lj_LJ001-0001.wav").read_bytes()
        r = await client.post("/v1/stt/transcribe", content=wav,
                              headers={"Content-Type": "audio/wav"})
        assert r.status_code == 200
    await asyncio.sleep(8)  # several scrapes while the load runs

    empty, flat = [], []
    for title, expr in panel_queries():
        series = prom.query(expr)
        if not series:
            empty.append(title)
        elif title in RATE_PANELS_NONZERO and not any(
            float(s["value"][1]) > 0 for s in series
        ):
            flat.append(title)
    await loader
    assert not empty, f"panels with no series: {empty}"
    assert not flat, f"rate panels at zero under load: {flat}"

    for _, expr in alert_rules():
        prom.query(expr)  # every alert expression is valid PromQL against real series
    assert await wait_for(lambda: "SttdClientErrorsHigh" in prom.firing()), prom.query(
        "sum(rate(stt_errors_total[5m])) / sum(rate(stt_sessions_total[5m]))")


async def test_capacity_alert_fires_when_sessions_fill_the_server(stack):
    from websockets.asyncio.client import connect

    server, prom = stack
    assert "SttdCapacityNearlyExhausted" not in prom.firing()
    sockets = [await connect(server.ws_url()) for _ in range(4)]  # 4 of 4 slots
    try:
        fired = await wait_for(lambda: "SttdCapacityNearlyExhausted" in prom.firing())
        assert fired, prom.query("stt_active_sessions")
    finally:
        for ws in sockets:
            await ws.close()


def test_alert_rules_pass_promtool():
    promtool = shutil.which("promtool")
    assert promtool, "Debian's prometheus package ships promtool"
    out = subprocess.run([promtool, "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dashboard_uses_a_datasource_variable_everywhere():
    variables = {v["name"] for v in DASHBOARD["templating"]["list"]}
    assert "datasource" in variables
    for panel in DASHBOARD["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
