"""Choosing a model's screening: the cheapest that leaves the answers where the reference puts them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from synthetic import model_digits

from service.engine import adaptive, estimator
from service.engine.runtime import load_model
from service.engine.scoring import Scorer
from service.schemas.options import ClassifyOptions
from service.settings import Settings
from training import screening
from training.card import card_text
from training.data import load_mnist


def test_compare_against_itself_is_zero_and_counts_changed_classes(shipped_model):
    from dataclasses import replace

    model = load_model(Settings(model_dir=shipped_model))
    x, y = model_digits(model, 6)
    reference, _ = screening.answers(model, x, 100, adaptive.Screening(16, 20.0))
    same = screening.compare(reference, reference, y)
    assert same["max_abs_diff_log_px"] == 0 and same["changed_predictions"] == 0 and same["max_abs_diff_py_x"] == 0
    assert same["accuracy"] >= 5 / 6  # the model recognises its own samples
    reversed_classes = replace(reference["posterior"], log_py_x=reference["posterior"].log_py_x[:, ::-1])
    moved = screening.compare(reference, {**reference, "posterior": reversed_classes}, y)
    assert moved["changed_predictions"] == 6 and moved["max_abs_diff_py_x"] > 0.5


def test_margins_come_from_the_errors_and_the_cheapest_candidate_that_moves_no_answer_is_chosen():
    errors = {64: 8.2, 16: 9.8, 8: 10.7}
    made = screening.candidates(errors)
    assert [c.looks() for c in made] == [
        ((64, 16.0),),  # 6.9 + 8.2 = 15.1, rounded up
        ((16, 17.0),),
        ((8, 18.0),),
        ((16, 17.0), (64, 16.0)),
        ((8, 18.0), (64, 16.0)),
    ]
    assert screening.needed_margin(0.0) == pytest.approx(np.log(1 / estimator.RELEVANT))

    def row(looks, needed, cost, moved):
        return {"looks": looks, "needed_margins": needed, "samples_per_image": cost, "max_abs_diff_py_x": moved}

    rows = [
        row([[64, 20.0]], [15.1], 2300, 0.0),  # the reference
        row([[8, 18.0]], [17.6], 1500, 0.002),  # moves an answer too far
        row([[8, 18.0], [64, 16.0]], [17.6, 15.1], 1450, 0.0004),
        row([[8, 15.0]], [17.6], 1300, 0.0),  # moves none here, but 8 draws were seen to err by more
    ]
    assert [screening.passes(r) for r in rows] == [True, False, True, False]
    assert screening.choose(rows)["looks"] == [[8, 18.0], [64, 16.0]]
    assert screening.entry_of(rows[2]) == {"samples": 8, "margin": 18.0, "recheck": {"samples": 64, "margin": 16.0}}
    assert screening.entry_of(rows[0]) == {"samples": 64, "margin": 20.0}
    assert screening.choose([{**rows[0], "needed_margins": [21.0]}, rows[1]]) == {**rows[0], "needed_margins": [21.0]}
    assert screening.REFERENCE == adaptive.Screening(64, 20.0) and screening.SIZES == (64, 16, 8)


def test_underestimates_measure_how_far_a_few_draws_put_near_classes_below_the_best(shipped_model):
    model = load_model(Settings(model_dir=shipped_model))
    x, _ = model_digits(model, 8)
    reference, _ = screening.answers(model, x, 100, adaptive.Screening(16, 20.0))
    errors = screening.underestimates(model, x, reference, [4, 100, 4])
    assert sorted(errors) == [4, 100]
    # the reference's classes in play drew exactly these 100 samples: no error against itself
    assert errors[100] == 0.0
    assert errors[4] >= 0.0  # the reference's best is never above itself


def test_a_calibration_was_scored_at_the_looks_it_records_or_else_at_its_settings_text():
    two_looks = adaptive.Screening(8, 18.0, (64, 16.0))
    recorded = {"settings": "anything", "screening": [[8, 18.0], [64, 16.0]]}
    assert screening.scored_at(recorded, two_looks)
    assert not screening.scored_at(recorded, adaptive.Screening(8, 18.0))
    assert not screening.scored_at(recorded, adaptive.Screening(8, 20.0, (64, 16.0)))
    older = {"settings": "the service's settings (K = 1000, screening 64 samples, margin 20.0 nats, tolerance 0.0)"}
    assert screening.scored_at(older, adaptive.Screening(64, 20.0))
    assert not screening.scored_at(older, two_looks)
    assert not screening.scored_at({}, two_looks)


def test_run_writes_the_screening_the_service_then_uses(shipped_model, mnist_dir, tmp_path, capsys):
    model_dir = tmp_path / "model"
    shutil.copytree(shipped_model, model_dir)
    entry = screening.run(model_dir, load_mnist(mnist_dir), images=12)
    # another choice than the screening the copy's calibration was scored at asks for a new calibration
    calibrated = json.loads((shipped_model / "manifest.json").read_text())["files"]["ood"]["reference"]
    warned = "run `cvae calibrate" in capsys.readouterr().out
    manifest = json.loads((model_dir / "manifest.json").read_text())
    chosen_screening = adaptive.screening_for(manifest)
    assert warned == (not screening.scored_at(calibrated, chosen_screening))
    assert manifest["screening"] == json.loads(json.dumps(entry))
    assert len(entry["candidates"]) == 1 + len(screening.LOOKS) and "12 validation digits" in entry["chosen_on"]
    chosen = screening.choose(entry["candidates"])
    assert screening.entry_of(chosen) == {k: entry[k] for k in ("samples", "margin", "recheck") if k in entry}
    assert screening.passes(chosen)
    assert set(entry["underestimates"]) == {str(size) for size in screening.SIZES}
    for r in entry["candidates"]:
        assert r["needed_margins"] == [screening.needed_margin(entry["underestimates"][str(s)]) for s, _ in r["looks"]]
    settings = Settings(model_dir=model_dir)
    model = load_model(settings)
    assert Scorer(model, settings).screening == chosen_screening
    assert chosen_screening.looks() == tuple(map(tuple, chosen["looks"]))
    card = (model_dir / "MODEL_CARD.md").read_text()
    assert f"scoring uses {chosen_screening.text()}" in card and card.count("\n| 64 @ 20.0 | ") == 1
    del manifest["screening"]
    assert "## Screening" not in card_text(manifest)  # a model without its own screening


def test_validation_digits_are_the_held_out_split(mnist_dir):
    from training.train import TrainConfig, split_train_val

    data = load_mnist(mnist_dir)
    manifest = {"training": {"config": {"seed": 0, "val_size": 5000}}, "likelihood": {"type": "bernoulli"}}
    x, labels = screening.validation(data, manifest, 30)
    _, val = split_train_val(data, TrainConfig(seed=0, val_size=5000))
    assert x.shape == (30, 784) and set(np.unique(x)) <= {0.0, 1.0}
    assert np.array_equal(labels, data.train_y[val[:30]])
    assert np.array_equal(x > 0, (x > 0) & (data.train_x[val[:30]] > 0))  # ink only where the digit has some
    grey, _ = screening.validation(data, manifest | {"likelihood": {"type": "logistic"}}, 30)
    assert np.allclose(grey, data.train_x[val[:30]] / 255.0)  # a model of grey levels: the levels as stored


def test_screening_scores_as_the_engine_does(shipped_model):
    """What `cvae screening` and bench.run measure (screening.score) is Scorer.score_now's answer on the same
    images, K, screening and seed."""
    scorer = Scorer.open(shipped_model)
    x, _ = model_digits(scorer.model, 4)
    ours, _ = screening.answers(scorer.model, x, 100, scorer.screening, seed=3)
    engine = scorer.score_now(x, ClassifyOptions(seed=3, num_samples=100))
    np.testing.assert_array_equal(ours["posterior"].log_px, engine.bayes.log_px)
    np.testing.assert_array_equal(ours["posterior"].log_py_x, engine.bayes.log_py_x)
    np.testing.assert_array_equal(ours["samples"], engine.samples_used)
