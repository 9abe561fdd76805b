"""The screening benchmark: what a smaller screening changes, and what it leaves alone."""

from __future__ import annotations

import json

from bench import screening
from service import rounds


def test_main_writes_the_table_on_test_digits(mnist_dir, tmp_path, monkeypatch, shipped_model):
    monkeypatch.setenv("MNIST_DIR", str(mnist_dir))
    monkeypatch.setenv("CVAE_DEFAULT_NUM_SAMPLES", "64")
    args = ["--model-dir", str(shipped_model), "--split", "test", "--images", "20", "--screen", "16", "4"]
    assert screening.main([*args, "--margins", "20", "5", "--own", "--rounds", "1", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "screening.json").read_text())
    rows = report["screenings"]
    own = rounds.screening_for(json.loads((shipped_model / "manifest.json").read_text()))
    assert (
        report["num_samples"] == 64
        and report["images"] == 20
        and list(rows)
        == [
            "16, 20",
            "4, 20",
            "16, 5",
            "4, 5",
            f"the model's own: {own.text()}",
            "16, 20, seed 1",
        ]
    )
    assert rows["16, 20"]["seconds"] and rows["4, 5"]["images_per_s"] > 0
    assert rows["4, 20"]["samples_per_image"] < rows["16, 20"]["samples_per_image"]
    assert rows["16, 5"]["samples_per_image"] <= rows["16, 20"]["samples_per_image"]
    assert rows["4, 5"]["looks"] == [[4, 5.0]]
    assert rows[f"the model's own: {own.text()}"]["looks"] == own.record()
    assert rows["16, 20, seed 1"]["seed"] == 1 and rows["16, 20, seed 1"]["max_abs_diff_log_px"] > 0
    assert "| 4, 5 | " in (tmp_path / "SCREENING.md").read_text()
