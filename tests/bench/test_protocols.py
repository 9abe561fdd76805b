"""bench.protocols on a tiny budget: both protocols answer the scorer, tracing on and off answer /v1/classify,
and the ratios are reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_protocol_benchmark_measures_both(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "bench.protocols", "--seconds", "1", "--rounds", "1", "--concurrency", "2"]
        + ["--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "protocols.json").read_text())
    assert all(runs[0] > 0 for runs in report["calls_per_s"].values())
    assert report["grpc_over_http"] > 0 and "target ≥ 0.95x" in (tmp_path / "PROTOCOLS.md").read_text()
    assert all(runs[0] > 0 for runs in report["tracing"]["requests_per_s"].values())
    assert report["tracing"]["on_over_off"] > 0
