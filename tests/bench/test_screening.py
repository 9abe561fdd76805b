"""The screening benchmark: what a smaller screening changes, and what it leaves alone."""

from __future__ import annotations

import json

import numpy as np

from bench import screening
from bench.run import in_process_scoring
from service import rounds
from service.runtime import load_model
from service.settings import Settings


def _own_digits(model, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.arange(n) % model.num_classes
    logits = model.decode(rng.standard_normal((n, model.latent_dim)), y)
    return (rng.random(logits.shape) < 1 / (1 + np.exp(-logits))).astype(np.float32), y


def test_classes_given_all_k_get_the_same_samples_whatever_the_screening(shipped_model):
    model = load_model(Settings(model_dir=shipped_model))
    x, _ = _own_digits(model, 4)
    wide, _ = in_process_scoring(model, x, 200, rounds.Screening(32, 20.0))
    narrow, _ = in_process_scoring(model, x, 200, rounds.Screening(4, 20.0))
    both = (wide.num_samples == 200) & (narrow.num_samples == 200)
    assert both.any() and narrow.num_samples.sum() < wide.num_samples.sum()
    np.testing.assert_allclose(narrow.log_px_y[both], wide.log_px_y[both], rtol=0, atol=1e-4)
    screened_only = narrow.num_samples == 4
    assert screened_only.any()  # and those keep a 4-sample estimate, not the 32-sample one
    assert not np.allclose(narrow.log_px_y[screened_only], wide.log_px_y[screened_only])


def test_compare_against_itself_is_zero_and_counts_changed_classes(shipped_model):
    model = load_model(Settings(model_dir=shipped_model))
    x, y = _own_digits(model, 6)
    reference, _ = screening.answers(model, x, 100, rounds.Screening(16, 20.0))
    same = screening.compare(reference, reference, y)
    assert same["max_abs_diff_log_px"] == 0 and same["changed_predictions"] == 0 and same["max_abs_diff_py_x"] == 0
    assert same["accuracy"] >= 5 / 6  # the model recognises its own samples
    flipped = {**reference, "posterior": _with_classes_reversed(reference["posterior"])}
    moved = screening.compare(reference, flipped, y)
    assert moved["changed_predictions"] == 6 and moved["max_abs_diff_py_x"] > 0.5


def _with_classes_reversed(posterior):
    from dataclasses import replace

    return replace(posterior, log_py_x=posterior.log_py_x[:, ::-1])


def test_main_writes_the_table_on_test_digits(mnist_dir, tmp_path, monkeypatch, shipped_model):
    monkeypatch.setenv("MNIST_DIR", str(mnist_dir))
    monkeypatch.setenv("CVAE_DEFAULT_NUM_SAMPLES", "64")
    args = ["--model-dir", str(shipped_model), "--split", "test", "--images", "20", "--screen", "16", "4"]
    assert screening.main([*args, "--margins", "20", "5", "--rounds", "1", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "screening.json").read_text())
    rows = report["screenings"]
    assert (
        report["num_samples"] == 64
        and report["images"] == 20
        and list(rows)
        == [
            "16, 20",
            "4, 20",
            "16, 5",
            "4, 5",
            "16, 20, seed 1",
        ]
    )
    assert rows["16, 20"]["speedup"] == 1.0 and rows["16, 20"]["changed_predictions"] == 0
    assert rows["4, 20"]["samples_per_image"] < rows["16, 20"]["samples_per_image"]
    assert rows["16, 5"]["samples_per_image"] <= rows["16, 20"]["samples_per_image"]
    assert (rows["4, 5"]["samples"], rows["4, 5"]["margin"]) == (4, 5.0)
    assert rows["16, 20, seed 1"]["seed"] == 1 and rows["16, 20, seed 1"]["max_abs_diff_log_px"] > 0
    assert "| 4, 5 | " in (tmp_path / "SCREENING.md").read_text()
