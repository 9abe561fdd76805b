"""The precision benchmark measures what it says, on a few images of the model itself."""

from __future__ import annotations

import numpy as np

from bench.precision import CONFIGS, accuracy, markdown, precision
from service.engine import adaptive
from service.engine.scoring import Scorer
from service.schemas.options import ClassifyOptions


def test_precision_rows_match_the_answers(shipped_model):
    scorer = Scorer.open(shipped_model, default_num_samples=100, default_tolerance=0.5)
    model = scorer.model
    rng = np.random.default_rng(0)
    y = np.arange(3)
    logits = model.decode(rng.standard_normal((3, model.latent_dim)), y)
    x = (rng.random(logits.shape) < 1 / (1 + np.exp(-logits))).astype(np.float32)
    row = precision(scorer, x, seeds=3)
    assert 0 < row["spread_median"] <= row["spread_p95"]
    assert row["reported_over_spread_median"] > 0 and 0 <= row["reliable_share"] <= 1
    assert row["samples_per_image"] >= 100 * 2  # at least the screened classes and the first round
    assert row["images_per_s"] > 0
    assert accuracy(scorer, x, y) >= 2 / 3  # the model recognises its own samples
    report = {
        "command": "python -m bench.precision",
        "cpu_count": 2,
        "model_dir": "m",
        "images": 3,
        "binarization": "x ~ Bernoulli(pixel/255), drawn once with torch seed 0",
        "seeds": 3,
        "accuracy_images": 3,
        "configs": {
            "defaults": {
                **row,
                "images_per_s": 12.5,
                "num_samples": 100,
                "screening": adaptive.Screening(8, 18.0, (64, 16.0)).text(),
                "accuracy": 1.0,
            }
        },
    }
    named = "| defaults (K = 100, screening 8 samples, margin 18.0 nats, then 64 samples, margin 16.0 nats) | "
    assert named in markdown(report) and "| 12.5 |" in markdown(report)


def test_each_configuration_scores_at_its_own_settings_never_the_environment(shipped_model, monkeypatch):
    monkeypatch.setenv("CVAE_MAX_WORK", "7")  # read, it would refuse every image
    monkeypatch.setenv("CVAE_DEFAULT_NUM_SAMPLES", "3")
    scorer = Scorer.open(str(shipped_model), **CONFIGS["K = 400, screening 16, margin 20, one round"])
    assert scorer.settings.default_num_samples == 400 and scorer.settings.max_work == 2_000_000
    assert scorer.screening.looks() == ((16, 20.0),)
    assert Scorer.open(str(shipped_model), **CONFIGS["defaults"]).settings.default_num_samples == 1000
    tolerance = Scorer.open(str(shipped_model), **CONFIGS["tolerance 0.1 nats, up to 8000 samples per class"])
    assert tolerance.settings.default_tolerance == 0.1 and tolerance.settings.max_num_samples == 8000


def test_the_precision_figures_are_the_engine_s(shipped_model):
    scorer = Scorer.open(str(shipped_model), default_num_samples=50)
    x = (np.random.default_rng(1).random((3, 784)) < 0.2).astype(np.float32)
    row = precision(scorer, x, seeds=2)
    runs = [scorer.score_now(x, ClassifyOptions(seed=seed)) for seed in range(2)]
    spread = np.stack([run.bayes.log_px for run in runs]).std(axis=0, ddof=1)
    assert row["spread_median"] == float(np.median(spread))
    assert row["samples_per_image"] == float(np.mean([run.samples_used for run in runs]))
