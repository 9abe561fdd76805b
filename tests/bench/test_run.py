"""bench.run on a tiny budget: every section runs against the service and the PyTorch peer and reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.run import CONCURRENCY, ENDPOINTS

ROOT = Path(__file__).resolve().parents[2]


def test_the_benchmark_runs_every_section_and_reports_its_targets(tmp_path, mnist_dir, shipped_model):
    tiny = ["--duration", "0.2", "--rounds", "1", "--num-samples", "8", "--large-batch", "4"]
    tiny += ["--adaptive-images", "20", "--adaptive-samples", "16", "--peers", "torch"]
    run = subprocess.run(
        [sys.executable, "-m", "bench.run", *tiny, "--model-dir", str(shipped_model)]
        + ["--data-dir", str(mnist_dir), "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "results.json").read_text())
    cells = {(c["server"], c["endpoint"], c["concurrency"]) for c in report["cells"]}
    assert {("service", name, c) for name in ENDPOINTS for c in CONCURRENCY} <= cells
    assert ("torch", "encode", 32) in cells and not any(server == "litserve" for server, _, _ in cells)
    assert all(c["errors"] == 0 and c["images_per_s"] > 0 for c in report["cells"])
    assert report["ort_images_per_s"] > 0 and report["http_large_images_per_s"] > 0
    assert report["adaptive"]["images"] == 20 and report["adaptive"]["speedup"] > 0
    results = (tmp_path / "RESULTS.md").read_text()
    assert "beats FastAPI + PyTorch eager" in results and "LitServe" not in results
    assert (tmp_path / "throughput.png").stat().st_size > 0
