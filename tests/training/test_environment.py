"""The service's CVAE_* environment steers no scoring outside the service: Scorer.open (training's commands
and the benchmarks score through it) and screening take the declared defaults and the values given."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from synthetic import model_digits

from service.engine.scoring import Scorer
from service.schemas.options import ClassifyOptions
from service.settings import SHIPPED_REPOSITORY, Defaults, Settings
from training import screening
from training.data import load_mnist

MODEL = SHIPPED_REPOSITORY / "mnist-cvae" / "2.0.0"
# a service's variables in the shell: read, they would refuse every request (7 decoder passes at most), score
# at K = 3 in rounds, flag half of all digits and abstain on nearly all
SERVICE_ENVIRONMENT = {
    "CVAE_MAX_WORK": "7",
    "CVAE_DEFAULT_NUM_SAMPLES": "3",
    "CVAE_DEFAULT_TOLERANCE": "0.01",
    "CVAE_OOD_FPR": "0.5",
    "CVAE_MIN_PROBABILITY": "0.99",
}


@pytest.fixture
def shell(monkeypatch):
    """Set SERVICE_ENVIRONMENT, as a shell that runs the service would."""

    def set_all():
        for name, value in SERVICE_ENVIRONMENT.items():
            monkeypatch.setenv(name, value)
        assert Settings().max_work == 7  # the service would take them

    return set_all


def test_scorer_open_scores_at_the_declared_defaults_whatever_the_environment(shell):
    plain = Scorer.open(MODEL)
    x, _ = model_digits(plain.model, 4)
    expected = plain.score_now(x, ClassifyOptions(seed=5))
    shell()
    scorer = Scorer.open(MODEL)
    assert scorer.settings == Defaults(model_dir=MODEL) and scorer.screening == plain.screening
    got = scorer.score_now(x, ClassifyOptions(seed=5))
    assert got.options == expected.options and got.options.ood_fpr == 0.01 and got.options.num_samples == 1000
    for column in ("log_px", "log_px_std_error", "log_py_x"):
        np.testing.assert_array_equal(getattr(got.bayes, column), getattr(expected.bayes, column))
    np.testing.assert_array_equal(got.samples_used, expected.samples_used)
    np.testing.assert_array_equal(got.verdicts.p_value, expected.verdicts.p_value)
    np.testing.assert_array_equal(got.abstain, expected.abstain)
    assert Scorer.open(MODEL, default_num_samples=3).settings.default_num_samples == 3  # the values given count


def test_screening_chooses_at_the_declared_defaults_whatever_the_environment(shell, mnist_dir, tmp_path):
    data = load_mnist(mnist_dir)
    entries = []
    for name in ("plain", "shell"):
        if name == "shell":
            shell()
        copy = tmp_path / name
        shutil.copytree(MODEL, copy)
        entry = screening.run(copy, data, images=2)
        entries.append(json.loads(json.dumps({k: v for k, v in entry.items() if k != "seconds"})))
    plain, shelled = entries
    assert "K = 1000" in shelled["chosen_on"] and shelled == plain
