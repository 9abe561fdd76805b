"""bench.overload on a tiny budget: both measurements run and report what their targets need."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_overload_benchmark_runs_and_reports_both_parts(tmp_path, mnist_dir):
    run = subprocess.run(
        [sys.executable, "-m", "bench.overload", "--seconds", "2", "--warm", "1", "--rounds", "1", "--images", "20"]
        + ["--data-dir", str(mnist_dir), "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "overload.json").read_text())
    goodput = report["goodput"]
    assert goodput["capacity_per_s"] > 0 and goodput["arrival_per_s"] == 4 * goodput["capacity_per_s"]
    (outcome,) = goodput["rounds"]
    assert sum(outcome["outcomes"].values()) > 0 and "transport error" not in outcome["outcomes"]
    assert goodput["goodput_per_s"] == outcome["goodput"] == outcome["outcomes"].get("answered", 0) / 2
    fair = report["fair_share"]
    for label in ("default", "all at once, no shares"):
        (outcome,) = fair["rounds"][label]
        assert outcome["alone_p99_ms"] > 0 and outcome["beside_p99_ms"] > 0 and outcome["light_failed"] == 0
    text = (tmp_path / "OVERLOAD.md").read_text()
    assert "Goodput with clients that give up" in text and "beside the heavy key at the defaults" in text
