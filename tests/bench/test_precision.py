"""The precision benchmark measures what it says, on a few images of the model itself."""

from __future__ import annotations

import numpy as np

from bench.precision import accuracy, markdown, precision
from service import adaptive
from service.runtime import load_model
from service.scoring import Scorer
from service.settings import Settings


def test_precision_rows_match_the_answers(shipped_model):
    settings = Settings(model_dir=shipped_model, batching=False, default_num_samples=100, default_tolerance=0.5)
    model = load_model(settings)
    scorer = Scorer(model, settings)
    rng = np.random.default_rng(0)
    y = np.arange(3)
    logits = model.decode(rng.standard_normal((3, model.latent_dim)), y)
    x = (rng.random(logits.shape) < 1 / (1 + np.exp(-logits))).astype(np.float32)
    row = precision(scorer, x, seeds=3)
    assert 0 < row["spread_median"] <= row["spread_p95"]
    assert row["reported_over_spread_median"] > 0 and 0 <= row["reliable_share"] <= 1
    assert row["samples_per_image"] >= 100 * 2  # at least the screened classes and the first round
    assert accuracy(scorer, x, y) >= 2 / 3  # the model recognises its own samples
    report = {
        "cpu_count": 2,
        "model_dir": "m",
        "images": 3,
        "binarization": "x ~ Bernoulli(pixel/255), drawn once with torch seed 0",
        "seeds": 3,
        "accuracy_images": 3,
        "concurrency": 8,
        "duration": 1.0,
        "command": "python -m bench.precision",
        "configs": {
            "defaults": {
                **row,
                "num_samples": 100,
                "screening": adaptive.Screening(8, 18.0, (64, 16.0)).text(),
                "accuracy": 1.0,
                "classify_images_per_s": 12.5,
            }
        },
    }
    named = "| defaults (K = 100, screening 8 samples, margin 18.0 nats, then 64 samples, margin 16.0 nats) | "
    assert named in markdown(report) and "12.5" in markdown(report)
