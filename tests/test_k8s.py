"""``deploy/k8s/``: every manifest valid for one pinned Kubernetes, consistent with the code,
and the autoscaling query evaluated by a real Prometheus scraping three real replicas.

- Built-in kinds: ``kubernetes-validate`` against Kubernetes ``K8S_VERSION``, strict (unknown
  fields fail). Custom resources (KEDA ``ScaledObject``, prometheus-operator
  ``ServiceMonitor``): the ``openAPIV3Schema`` of their CRDs, vendored in
  ``tests/k8s_schemas/`` (see ``SCHEMAS``), with ``jsonschema``, plus the API server's
  pruning rule (a field the schema does not name is an error here).
- Consistency: probe paths are routes of the app, env names are settings of config.py, the
  grace period covers preStop + ``STT_DRAIN_TIMEOUT_SEC``, ports and selectors line up.
- The query: three ``sttd serve`` processes (mock backend, 4 slots each) labelled as
  Kubernetes service discovery and the ServiceMonitor would label them; 9 of 12 slots held
  (4 / 3 / 2); the query string is read from ``keda-scaledobject.yaml``. Run with ``-s`` for
  the values.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from config import REPO_ROOT, Settings

K8S = REPO_ROOT / "deploy" / "k8s"
K8S_VERSION = "1.31.0"  # the Kubernetes whose schemas every built-in object must pass
SCHEMA_DIR = REPO_ROOT / "tests" / "k8s_schemas"
# (apiVersion, kind) -> vendored openAPIV3Schema: the storage version of the CRD file at
#   keda.sh_scaledobject_v1alpha1.json: kedacore/keda config/crd/bases/keda.sh_scaledobjects.yaml
#     at 8b4f083ca8c8c2baf8477e322bd4d16ac4dfa09a (main, 2026-08-20; v2.20.1-117)
#   monitoring.coreos.com_servicemonitor_v1.json: prometheus-operator/prometheus-operator
#     example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml
#     at 6adcebc5076c34f4f55f8f5f7b1e528929373ac7 (main, 2026-08-08; after v0.93.0)
SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobject_v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitor_v1.json",
}
SETTINGS = {f"STT_{name.upper()}" for name in Settings.model_fields}


def manifests() -> list[tuple[Path, dict]]:
    out = []
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path, doc))
    return out


def name_of(path: Path, doc: dict) -> str:
    return f"{path.relative_to(K8S)}:{doc['kind']}/{doc.get('metadata', {}).get('name', '')}"


def find(kind: str, name: str, namespace: str) -> dict:
    hits = [d for _, d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name
            and d["metadata"].get("namespace") == namespace]
    assert len(hits) == 1, (kind, name, namespace, len(hits))
    return hits[0]


def configmap_env(deployment: dict) -> dict[str, str]:
    """The env a Deployment's first container gets: its ConfigMaps, then its own ``env``."""
    ns = deployment["metadata"]["namespace"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(find("ConfigMap", source["configMapRef"]["name"], ns)["data"])
    for var in container.get("env", []):
        env[var["name"]] = var.get("value", "<from secret>")
    return env


def sttd_deployments() -> list[dict]:
    return [d for _, d in manifests() if d["kind"] == "Deployment"
            and d["spec"]["template"]["spec"]["containers"][0]["command"][0] == "sttd"]


def unknown_fields(obj, schema: dict, at: str = "") -> list[str]:
    """Fields the API server would prune: not named by the structural schema."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    out = []
    if isinstance(obj, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in obj.items():
            if props is not None and key in props:
                out += unknown_fields(value, props[key], f"{at}.{key}")
            elif isinstance(extra, dict):
                out += unknown_fields(value, extra, f"{at}.{key}")
            elif props is not None and at != ".metadata":
                out.append(f"{at}.{key}")
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            out += unknown_fields(item, schema["items"], f"{at}[{i}]")
    return out


# ---------------------------------------------------------------------------------------
# Schemas


def test_every_manifest_is_valid_for_the_pinned_kubernetes():
    import jsonschema
    import kubernetes_validate

    checked, kinds = 0, set()
    for path, doc in manifests():
        kinds.add(doc["kind"])
        if doc["kind"] == "Kustomization":
            for resource in doc["resources"]:
                assert (path.parent / resource).exists(), (path, resource)
            continue
        key = (doc["apiVersion"], doc["kind"])
        if key in SCHEMAS:
            schema = json.loads((SCHEMA_DIR / SCHEMAS[key]).read_text())
            jsonschema.Draft7Validator(schema).validate(doc)
            assert not unknown_fields(doc, schema), (name_of(path, doc),
                                                      unknown_fields(doc, schema))
        else:
            try:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                raise AssertionError(f"{name_of(path, doc)}: {e.message} at {e.path}") from e
        checked += 1
    assert {"Namespace", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget",
            "ScaledObject", "ServiceMonitor", "HorizontalPodAutoscaler", "Secret"} <= kinds
    assert checked >= 18, checked


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("folder", [K8S, K8S / "gpu"], ids=["cpu", "gpu"])
def test_kustomize_builds(folder):
    out = subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    built = [(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(out.stdout)]
    assert ("Deployment", "sttd" if folder == K8S else "sttd-frontend") in built


def test_the_validators_catch_mistakes():
    """Strict mode and the pruning check do fail on a misspelt field."""
    import kubernetes_validate

    doc = json.loads(json.dumps(find("Deployment", "sttd", "stt")))
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    scaled = json.loads(json.dumps(find("ScaledObject", "sttd", "stt")))
    scaled["spec"]["minReplicas"] = 2  # the HPA's spelling, not KEDA's
    schema = json.loads((SCHEMA_DIR / SCHEMAS[("keda.sh/v1alpha1", "ScaledObject")]).read_text())
    assert unknown_fields(scaled, schema) == [".spec.minReplicas"]


# ---------------------------------------------------------------------------------------
# Consistency with the code and between objects


def test_env_names_are_settings_of_config_py():
    for path, doc in manifests():
        names = []
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith("sttd"):
            names = list(doc["data"])
        if doc["kind"] == "Deployment":
            names = [e["name"] for c in doc["spec"]["template"]["spec"]["containers"]
                     for e in c.get("env", []) if e["name"].startswith("STT_")]
        unknown = [n for n in names if n not in SETTINGS]
        assert not unknown, (name_of(path, doc), unknown)
    for deployment in sttd_deployments():  # and the values parse as the server would
        Settings(**{k[4:].lower(): v for k, v in configmap_env(deployment).items()
                    if v != "<from secret>"})


def test_probes_ports_and_grace_period_match_the_server():
    from app import create_app

    routes = {r.path for r in create_app(Settings(backend="mock")).routes}
    deployments = sttd_deployments()
    assert {d["metadata"]["name"] for d in deployments} == {"sttd", "sttd-frontend"}
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env = configmap_env(deployment)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["http"] == int(env["STT_PORT"]) == int(container["command"][-1])
        assert env["STT_HOST"] == "0.0.0.0"
        probes = {k: container[k]["httpGet"] for k in
                  ("startupProbe", "readinessProbe", "livenessProbe")}
        for probe in probes.values():
            assert probe["path"] in routes and probe["port"] in ("http", ports["http"])
        assert probes["readinessProbe"]["path"] == "/ready"
        assert probes["livenessProbe"]["path"] == "/health"
        readiness = container["readinessProbe"]
        assert readiness["periodSeconds"] == 2 and readiness["failureThreshold"] in (1, 2)
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert int(annotations["prometheus.io/port"]) == ports["http"]
        assert annotations["prometheus.io/path"] in routes
        # preStop only covers endpoint propagation; sttd's own drain must fit after it.
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep"
        pre_stop = float(command[1])
        drain = float(env["STT_DRAIN_TIMEOUT_SEC"])
        assert pre_stop <= 15
        assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + 5, (
            deployment["metadata"]["name"], pre_stop, drain)
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_services_pdbs_and_autoscalers_select_the_pods():
    docs = [d for _, d in manifests()]
    for deployment in [d for d in docs if d["kind"] == "Deployment"]:
        meta, ns = deployment["metadata"], deployment["metadata"]["namespace"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ports = {p["name"] for c in deployment["spec"]["template"]["spec"]["containers"]
                 for p in c["ports"]}
        services = [s for s in docs if s["kind"] == "Service" and s["metadata"]["namespace"] == ns
                    and s["spec"]["selector"].items() <= labels.items()]
        assert len(services) == 1, meta["name"]
        service = services[0]
        assert service["spec"]["sessionAffinity"] == "None"
        assert all(p["targetPort"] in ports and p["name"] for p in service["spec"]["ports"])
        if deployment["spec"]["template"]["spec"]["containers"][0]["command"][0] != "sttd":
            continue
        pdbs = [p for p in docs if p["kind"] == "PodDisruptionBudget"
                and p["metadata"]["namespace"] == ns
                and p["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(pdbs) == 1, meta["name"]
        scalers = [s for s in docs if s["kind"] in ("ScaledObject", "HorizontalPodAutoscaler")
                   and s["metadata"]["namespace"] == ns
                   and s["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1",
                                                       "kind": "Deployment",
                                                       "name": meta["name"]}]
        assert scalers, meta["name"]
        for scaler in scalers:
            if scaler["kind"] == "ScaledObject":
                (trigger,) = scaler["spec"]["triggers"]
                assert trigger["type"] == "prometheus" and trigger["metricType"] == "Value"
                assert (f'namespace="{ns}"' in trigger["metadata"]["query"]
                        and f'service="{service["metadata"]["name"]}"'
                        in trigger["metadata"]["query"])
                window = (scaler["spec"]["advanced"]["horizontalPodAutoscalerConfig"]
                          ["behavior"]["scaleDown"]["stabilizationWindowSeconds"])
                assert window >= 300
    monitor = find("ServiceMonitor", "sttd", "stt")
    service = find("Service", "sttd", "stt")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {
        p["name"] for p in service["spec"]["ports"]}


def test_the_gpu_tier_front_ends_point_at_the_vllm_service():
    frontend = find("Deployment", "sttd-frontend", "stt-gpu")
    env = configmap_env(frontend)
    assert env["STT_BACKEND"] == "qwen3"
    vllm = find("Deployment", "vllm-qwen3-asr", "stt-gpu")
    service = find("Service", "vllm-qwen3-asr", "stt-gpu")
    port = service["spec"]["ports"][0]["port"]
    assert env["STT_QWEN3_REMOTE_URL"] == f"http://vllm-qwen3-asr.stt-gpu.svc:{port}"
    container = vllm["spec"]["template"]["spec"]["containers"][0]
    assert f"--served-model-name={env['STT_QWEN3_REMOTE_MODEL']}" in container["args"]
    assert f"--port={port}" in container["args"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    # the same Secret key on both sides of the bearer token
    key = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}["VLLM_API_KEY"]
    fe = {e["name"]: e["valueFrom"]["secretKeyRef"]
          for e in frontend["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert fe["STT_QWEN3_REMOTE_API_KEY"] == key


# ---------------------------------------------------------------------------------------
# The autoscaling query against a real Prometheus and three real replicas

CAPACITY = 4  # STT_MAX_SESSIONS of each test replica
SPREAD = (4, 3, 2)  # sessions opened on each: 9 of 12 slots
# What Kubernetes service discovery (role endpoints) gives the ServiceMonitor's scrape, and
# the relabelling the operator generates for it: namespace, service, pod labels.
RELABEL = ("[{source_labels: [__meta_kubernetes_namespace], target_label: namespace},"
           " {source_labels: [__meta_kubernetes_service_name], target_label: service},"
           " {source_labels: [__meta_kubernetes_pod_name], target_label: pod}]")


def keda_trigger() -> tuple[str, float, int, int]:
    scaled = find("ScaledObject", "sttd", "stt")
    (trigger,) = scaled["spec"]["triggers"]
    return (trigger["metadata"]["query"], float(trigger["metadata"]["threshold"]),
            scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"])


def adapter_query() -> str:
    config = yaml.safe_load(find("ConfigMap", "prometheus-adapter", "monitoring")["data"]
                            ["config.yaml"])
    (rule,) = config["externalRules"]
    hpa = find("HorizontalPodAutoscaler", "sttd", "stt")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["external"]["metric"]["name"] == rule["name"]["as"]
    matchers = ",".join(['namespace="stt"'] + [
        f'{k}="{v}"' for k, v in metric["external"]["metric"]["selector"]["matchLabels"].items()])
    return rule["metricsQuery"].replace("<<.LabelMatchers>>", matchers)


def hpa_desired(current: int, value: float, target: float, low: int, high: int) -> int:
    """The HPA's rule for an External metric with a Value target (KEDA metricType Value):
    ceil(current * value / target), unchanged within the 10 % tolerance, then clamped."""
    ratio = value / target
    desired = current if abs(ratio - 1) <= 0.1 else math.ceil(current * ratio)
    return max(low, min(high, desired))


def test_the_adapter_rule_is_the_keda_query():
    assert adapter_query() == keda_trigger()[0]
    hpa = find("HorizontalPodAutoscaler", "sttd", "stt")
    scaled = find("ScaledObject", "sttd", "stt")
    assert hpa["spec"]["metrics"][0]["external"]["target"] == {"type": "Value",
                                                                "value": "600m"}
    assert float(scaled["spec"]["triggers"][0]["metadata"]["threshold"]) == 0.6
    assert hpa["spec"]["behavior"]["scaleDown"] == (
        scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"])
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == keda_trigger()[2:]


class Replica:
    def __init__(self, name: str, workdir: Path, **env: str) -> None:
        from tests.server import free_port

        self.name, self.port = name, free_port()
        self.log = (workdir / f"{name}.log").open("w")
        self.proc = subprocess.Popen(
            [str(REPO_ROOT / ".venv" / "bin" / "sttd"), "serve", "--port", str(self.port)],
            cwd=REPO_ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            env={"PATH": "/usr/bin:/bin", "STT_BACKEND": "mock", "STT_VAD": "energy",
                 "STT_LOG_LEVEL": "warning", "STT_MAX_SESSIONS": str(CAPACITY),
                 "STT_DRAIN_TIMEOUT_SEC": "20", **env})

    def url(self, call_id: str) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stt/ws?sample_rate=16000&call_id={call_id}"

    def wait_ready(self, within_s: float = 30) -> None:
        deadline = time.monotonic() + within_s
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ready", timeout=2):
                    return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def fleet(tmp_path):
    from tests.test_prometheus import PROMETHEUS, Prometheus

    if PROMETHEUS is None:
        if os.environ.get("STT_REQUIRE_PROMETHEUS"):
            raise RuntimeError("prometheus is required here (.ci/run installs Debian's package)")
        pytest.skip("prometheus is not installed")
    # r3 decodes slowly, so that its drain (each open segment's final) takes a few seconds
    # and Prometheus sees the draining replica still holding its sessions.
    replicas = [Replica("sttd-r1", tmp_path), Replica("sttd-r2", tmp_path),
                Replica("sttd-r3", tmp_path, STT_MOCK_DELAY_MS="1500")]
    prom = None
    try:
        for r in replicas:
            r.wait_ready()
        targets = [(r.port, {"__meta_kubernetes_namespace": "stt",
                             "__meta_kubernetes_service_name": "sttd",
                             "__meta_kubernetes_pod_name": r.name}) for r in replicas]
        # A replica of another Service in the namespace, which the selector must leave out.
        other = Replica("other-0", tmp_path)
        replicas.append(other)
        other.wait_ready()
        targets.append((other.port, {"__meta_kubernetes_namespace": "stt",
                                     "__meta_kubernetes_service_name": "other",
                                     "__meta_kubernetes_pod_name": "other-0"}))
        prom = Prometheus(tmp_path, targets=targets, relabel_configs=RELABEL)
        yield replicas[:3], prom
    finally:
        if prom is not None:
            prom.stop()
        for r in replicas:
            r.stop()


async def settle(prom, expr: str, expected: float, within_s: float = 15.0) -> float:
    deadline = time.monotonic() + within_s
    while True:
        result = prom.query(expr)
        value = float(result[0]["value"][1]) if result else float("nan")
        if math.isclose(value, expected, abs_tol=1e-9) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.25)


async def test_autoscaling_query_against_prometheus_scraping_three_replicas(fleet):
    from websockets.asyncio.client import connect

    from tests.backends.conformance import FIXTURES
    from tests.client import stream

    replicas, prom = fleet
    query, target, low, high = keda_trigger()
    assert prom.query(adapter_query()), "the adapter's query selects the same series"
    labels = {s["metric"]["pod"]: s["metric"] for s in prom.query("stt_max_sessions")}
    assert set(labels) == {"sttd-r1", "sttd-r2", "sttd-r3", "other-0"}
    assert labels["sttd-r1"]["namespace"] == "stt" and labels["sttd-r1"]["service"] == "sttd"
    started = time.monotonic()

    idle = await settle(prom, query, 0.0)
    assert idle == 0.0
    print(f"\nidle fleet: {query} = {idle}, desired {hpa_desired(3, idle, target, low, high)}")

    sockets = []
    for replica, count in zip(replicas[:2], SPREAD[:2], strict=True):
        for i in range(count):
            sockets.append(await connect(replica.url(f"{replica.name}-{i}"),
                                         ping_interval=None))
    # On r3: two calls streaming speech at real time, so a drain has finals to decode.
    clip = FIXTURES["lj_LJ001-0001"].pcm()
    calls = [asyncio.create_task(stream(replicas[2].url(f"r3-{i}"), clip, realtime=1.0))
             for i in range(SPREAD[2])]
    try:
        busy = await settle(prom, query, 9 / 12)
        adapter = float(prom.query(adapter_query())[0]["value"][1])
        desired = hpa_desired(3, busy, target, low, high)
        print(f"9 of 12 slots (4/3/2): value {busy}, adapter {adapter}, threshold {target}: "
              f"desired {desired} (ceil(3 x {busy} / {target}) = "
              f"{math.ceil(3 * busy / target)}); at 0.7 it would be "
              f"{hpa_desired(3, busy, 0.7, low, high)} (within the 10 % tolerance)")
        assert busy == adapter == 0.75
        assert desired == 4
        assert hpa_desired(3, busy, 0.7, low, high) == 3  # why the threshold is 0.6

        # Drain r3 (what a scale-down or a rollout does to a pod): SIGTERM, as the kubelet.
        await asyncio.sleep(2)  # r3's calls have speech in their open segments
        replicas[2].proc.send_signal(signal.SIGTERM)
        sel = '{namespace="stt",service="sttd"}'
        seen = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < 25:
            value = prom.query(query)
            draining = prom.query(f"sum(stt_draining{sel})")
            up = prom.query(f"sum(up{sel})")
            seen.append((round(time.monotonic() - t0, 1),
                         float(value[0]["value"][1]) if value else None,
                         float(draining[0]["value"][1]) if draining else None,
                         float(up[0]["value"][1]) if up else None))
            if replicas[2].proc.poll() is not None and seen[-1][1] == 7 / 8:
                break
            await asyncio.sleep(0.5)
        transcripts = await asyncio.gather(*calls)
        compact = []
        for s in seen:  # the distinct states, in order
            if not compact or compact[-1][1:] != s[1:]:
                compact.append(s)
        print("after SIGTERM to r3 (t s, value, sum stt_draining, targets up):", compact)
        print("r3 exit code", replicas[2].proc.returncode, "calls' close codes",
              [t.close_code for t in transcripts])
        assert replicas[2].proc.returncode == 0
        assert all(t.close_code == 1012 and t.of("final") for t in transcripts)
        assert any(s[2] == 1 for s in seen), "Prometheus never saw r3 draining"
        draining_values = {s[1] for s in seen if s[2] == 1}
        # While r3 drains, its 4 slots still count though it admits nothing: 9/12 with its
        # two calls open, 8/12 and 7/12 as they get their finals and end.
        assert draining_values <= {9 / 12, 8 / 12, 7 / 12}, draining_values
        after = seen[-1][1]
        assert after == 7 / 8, seen  # r3 gone: its series are stale, 7 of the 8 slots left
        print(f"r3 gone: value {after}, desired (2 replicas) "
              f"{hpa_desired(2, after, target, low, high)}")
        assert hpa_desired(2, after, target, low, high) == 3
    finally:
        for ws in sockets:
            await ws.close()
        for task in calls:
            task.cancel()
    down = await settle(prom, query, 0.0)
    print(f"all closed: value {down}, desired {hpa_desired(2, down, target, low, high)} "
          f"(minReplicaCount {low}); test took {time.monotonic() - started:.1f} s")
    assert down == 0.0
    assert hpa_desired(2, down, target, low, high) == low
    assert hpa_desired(5, 1 / 12, target, low, high) == low
    assert re.fullmatch(r"sum\(stt_active_sessions\{[^}]+\}\) / sum\(stt_max_sessions\{[^}]+\}\)",
                        query)
