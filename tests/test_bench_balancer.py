"""``bench.balancer`` at a tiny size: 3 mock replicas and HAProxy on the shipped config, the
same load direct and through the balancer, both modes in the JSON with their finals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from config import REPO_ROOT

HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
if HAPROXY is None and os.environ.get("STT_REQUIRE_HAPROXY"):
    raise RuntimeError("haproxy is required here (.ci/run installs Debian's package)")
AUDIO = REPO_ROOT.parent / "shared" / "eval"
pytestmark = [pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed"),
              pytest.mark.skipif(not (AUDIO / "manifest.jsonl").is_file(),
                                 reason="no ../shared/eval audio")]
CLIPS = "ps_cards_001,ps_cards_002,ps_goforward"  # short commands: endpoints within 3 s


def test_direct_and_balanced_in_one_run(tmp_path):
    out = tmp_path / "balancer.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.balancer", "--concurrency", "2,3", "--duration", "3",
         "--reps", "1", "--settle", "0.5", "--ids", CLIPS, "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["tool"] == "bench.balancer"
    assert report["haproxy_version"].startswith("HAProxy version")
    assert [r["clients"] for r in report["rungs"]] == [2, 3]
    for rung in report["rungs"]:
        n = rung["clients"]
        for mode in ("direct", "balanced"):
            m = rung["modes"][mode]
            assert m["final_ms"]["n"] > 0, (mode, m)
            assert m["errors"] == 0 and m["refused"] == 0
            assert m["haproxy_cpu_pct"] is not None
        assert rung["modes"]["direct"]["spread"] == [[0, 0, 0]]  # HAProxy saw none of them
        assert sum(rung["modes"]["balanced"]["spread"][0]) == n  # every one went through it
        assert rung["added_final_ms"]["p95"] is not None
    assert "| balanced |" in report["table"]
