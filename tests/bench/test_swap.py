"""A version swap under load, from a separate process: no request fails and the new version takes over."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.swap import summarize

ROOT = Path(__file__).resolve().parents[2]


def test_a_swap_under_load_fails_no_request(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "bench.swap", "--concurrency", "16", "--seconds", "12", "--swap-at", "4"]
        + ["--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads((tmp_path / "swap.json").read_text())
    assert report["failed"] == 0, run.stdout[-3000:]
    assert report["new_version_ready_s"] is not None
    after = report["answers_per_version_after_ready"]
    assert set(after) == {report["new_version"]} and after[report["new_version"]] > 10  # it took over
    assert report["answers_per_version"].get(report["old_version"], 0) > 10  # and the old one served first


def test_the_summary_counts_failures_and_slow_seconds():
    records = [(t / 10, 0.1, "200", "1") for t in range(0, 100)]  # 10 s at 100 ms, version 1
    records += [(10 + t / 10, 0.5 if t < 20 else 0.1, "200", "2") for t in range(0, 50)]  # 2 slow seconds
    records.append((11.5, 0.1, "503", ""))
    report = summarize(records, {"swap": 10.0, "ready": 10.5}, 15, 10, "1", "2")
    assert report["failed"] == 1 and report["failed_statuses"] == ["503"]
    assert report["baseline_p99_ms"] == 100.0
    assert report["seconds_over_2x_baseline"] == 2  # 10 s and 11 s; 12-14 s are fast
    assert report["target_met"] is False
