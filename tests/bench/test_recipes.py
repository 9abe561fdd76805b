"""Training recipes side by side (bench.recipes)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import pytest

torch = pytest.importorskip("torch")

from bench.recipes import assess, history_from_log, main, markdown, recipe_configs  # noqa: E402
from tests.conftest import ROOT  # noqa: E402

BASE = ROOT / "models" / "mnist-cvae" / "2.0.0"


def test_a_recipe_is_the_base_recipe_with_its_changes():
    base_model, base_train = recipe_configs("shipped", BASE)
    manifest = json.loads((BASE / "manifest.json").read_text())
    assert base_model.to_dict() == {**manifest["model_config"], "image_shape": (28, 28), "hidden_dims": (512, 512)}
    recorded = manifest["training"]["config"]
    assert {key: value for key, value in asdict(base_train).items() if key in recorded and key != "threads"} == {
        key: value for key, value in recorded.items() if key != "threads"
    }
    model, train = recipe_configs("k-10-flow-8", BASE, epochs=3, device="cuda")
    assert (model.flow_layers, train.num_samples, train.epochs, train.device) == (8, 10, 3, "cuda")
    assert (model.latent_dim, train.elbo_weight, train.classify_weight) == (32, 0.5, 1.0)


def test_the_history_is_read_back_from_what_training_prints(mnist_dir, tmp_path, capsys):
    from training.data import load_mnist
    from training.model import ModelConfig
    from training.train import TrainConfig, train

    config = TrainConfig(epochs=2, train_limit=200, val_size=100, objective="dreg", elbo_weight=0.5)
    checkpoint = train(
        ModelConfig(latent_dim=4, hidden_dims=(32,), flow_layers=2, flow_hidden=8), config, load_mnist(mnist_dir)
    )
    log = tmp_path / "recipe.log"
    log.write_text("epoch 1:  40%|####      | 2/5 [00:01<00:01]\r" + capsys.readouterr().out)
    history = history_from_log(log)
    assert [record["epoch"] for record in history] == [1, 2]
    for read, recorded in zip(history, checkpoint.extra["history"]):
        for key in ("train_bound", "val_bound_log_px_y", "val_bound_log_px", "val_accuracy"):
            assert read[key] == pytest.approx(recorded[key], abs=1e-3)


def test_assessment_figures_are_in_their_ranges_and_sharpen_with_more_samples():
    from training.model import CVAE, ModelConfig

    torch.manual_seed(0)
    model = CVAE(ModelConfig(latent_dim=4, hidden_dims=(32,), flow_layers=2, flow_hidden=8))
    x = (torch.rand(12, 784, generator=torch.Generator().manual_seed(1)) < 0.2).float()
    y = torch.arange(12) % 10
    log_prior = torch.full((10,), 0.1).log()
    few, many = (assess(model, x, y, log_prior, num_samples=k, spread_images=6, seeds=3, chunk=5) for k in (20, 500))
    for figures, k in ((few, 20), (many, 500)):
        assert 1 <= figures["median_ess"] <= k
        assert 0 < figures["spread_median"] <= figures["spread_p95"] < math.inf
        assert 0 <= figures["accuracy"] <= 1 and math.isfinite(figures["log_px"])
    # seeds that really differ: the spread between them shrinks as the samples grow, the ESS grows
    assert many["spread_median"] < few["spread_median"] and many["median_ess"] > few["median_ess"]


def test_a_stopped_recipe_stands_beside_the_base_at_the_epoch_it_reached():
    results = {
        "flow-8": {
            "what": "8 coupling layers in q",
            "train_config": {"epochs": 46},
            "history": [{"epoch": 25, "val_bound_log_px": -87.25, "val_accuracy": 0.9838}],
            "stopped": True,
        }
    }
    base = [{"epoch": 24, "val_bound_log_px": -87.73}, {"epoch": 25, "val_bound_log_px": -87.53}]
    report = markdown(results, {"flow-8": {"minutes": 48.2}}, "python -m bench.recipes", base)
    row = next(line for line in report.splitlines() if line.startswith("| flow-8 "))
    assert "25 of 46 (stopped)" in row and "-87.25 (-87.53)" in row and "stopped before scoring" in row
    assert row.rstrip().endswith("| 48 |")


def test_a_small_run_trains_scores_and_times_a_recipe(mnist_dir, tmp_path):
    common = ["--data-dir", str(mnist_dir), "--base", str(BASE), "--recipes", "latent-16", "--out", str(tmp_path)]
    small = ["--epochs", "1", "--train-limit", "200", "--images", "20", "--spread-images", "8", "--num-samples", "20"]
    assert main([*common, *small]) == 0
    result = json.loads((tmp_path / "latent-16" / "result.json").read_text())
    assert result["model_config"]["latent_dim"] == 16 and result["best_epoch"] == 1
    assert result["assessment"]["images"] == 20 and result["assessment"]["spread_images"] == 8
    assert main([*common, "--epochs", "1", "--cpu-steps", "1"]) == 0
    cpu = json.loads((tmp_path / "cpu.json").read_text())
    assert cpu["latent-16"]["minutes"] > 0 and cpu["latent-16"]["epochs"] == 1
    report = (tmp_path / "RECIPES.md").read_text()
    assert "| latent-16 | 16 latent dimensions | 1 of 1 |" in report


def test_a_recipe_still_training_at_the_deadline_is_stopped_and_reported(mnist_dir, tmp_path, capsys):
    args = ["--data-dir", str(mnist_dir), "--base", str(BASE), "--recipes", "latent-16", "--out", str(tmp_path)]
    assert main([*args, "--deadline", "0.0001"]) == 0
    assert "stopped at the deadline: ['latent-16']" in capsys.readouterr().err
    assert not (tmp_path / "latent-16" / "result.json").exists()
    assert "| latent-16 | 16 latent dimensions | not trained |" in (tmp_path / "RECIPES.md").read_text()
