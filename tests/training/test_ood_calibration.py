"""`cvae calibrate` on a tiny model: the reference comes from the validation split, and the service loads it."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from synthetic import synthetic_mnist  # noqa: E402

from service import ood  # noqa: E402
from service.runtime import load_model  # noqa: E402
from service.settings import Settings  # noqa: E402
from training.export import export, read_manifest  # noqa: E402
from training.gold_standard import service_answers  # noqa: E402
from training.model import ModelConfig  # noqa: E402
from training.ood import BACKGROUND_DRAWS, abstention_curve, calibrate  # noqa: E402
from training.train import TrainConfig, binarize, split_train_val, train  # noqa: E402


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    data = synthetic_mnist()
    config = TrainConfig(epochs=2, batch_size=50, num_samples=2, val_size=40, seed=3)
    checkpoint = train(ModelConfig(latent_dim=4, hidden_dims=(32, 32)), config, data)
    out = export(checkpoint, tmp_path_factory.mktemp("model"))
    return data, config, out, calibrate(out, data)


def test_the_reference_is_the_validation_split_scored_by_the_service(calibrated):
    data, config, out, entry = calibrated
    train_idx, val_idx = split_train_val(data, config)
    assert entry["reference"]["split"] == "validation" and len(val_idx) == 40
    assert entry["background"]["binary_images_counted"] == BACKGROUND_DRAWS * len(train_idx)
    assert entry["reference"]["num_images"] == entry["reference"]["statistic_images"] == 20
    x = binarize(torch.from_numpy(data.train_x[val_idx]), torch.Generator().manual_seed(0)).numpy()
    answers = service_answers(out, x, 0)
    log_px = np.array([a["log_px"] for a in answers])
    elbo = np.array([a["elbo"]["value"] for a in answers])
    with np.load(out / "ood.npz") as stored:
        # the first half is the reference of the tests ...
        np.testing.assert_allclose(stored["reference_log_px"], log_px[:20], rtol=0, atol=1e-9)
        np.testing.assert_allclose(stored["reference_gap"], log_px[:20] - elbo[:20], rtol=0, atol=1e-9)
        # ... and the second half's Fisher statistics against it, of the combined p-value
        first = ood.Calibration.load(out / "ood.npz")
        found = ood.tests(log_px[20:], elbo[20:], x[20:], (28, 28), first)
        np.testing.assert_allclose(stored["reference_statistic"], ood.fisher_statistic(found), rtol=0, atol=1e-9)
    assert read_manifest(out)["files"]["ood"] == entry


def test_the_service_loads_the_calibration_and_checks_it(calibrated):
    _, _, out, entry = calibrated
    model = load_model(Settings(model_dir=out))
    assert model.ood is not None and len(model.ood.reference_score) == len(model.ood.reference_statistic) == 20
    assert list(model.ood.reference_score) == sorted(model.ood.reference_score)
    assert entry["template"] == [list(t) for t in ood.TEMPLATE]


def test_conformal_p_values_count_the_reference():
    calibration = ood.Calibration(np.zeros((2, ood.NUM_CONTEXTS)), np.arange(99.0), np.arange(99.0), np.arange(99.0))
    np.testing.assert_allclose(calibration_p(calibration, [-1.0, 0.0, 49.5, 1e9]), [0.01, 0.02, 0.51, 1.0])


def test_the_ink_test_is_two_sided():
    reference = np.arange(99.0)
    np.testing.assert_allclose(ood._conformal_two_sided(reference, np.array([-1.0, 49.0, 200.0])), [0.02, 1.0, 0.02])


def test_the_combined_p_value_counts_the_statistics_of_other_digits():
    """Fisher's statistic of the four tests, counted against the reference statistics at or above it."""
    ref = np.arange(99.0)
    calibration = ood.Calibration(np.zeros((2, ood.NUM_CONTEXTS)), ref, ref, ref, ref, np.arange(1.0, 100.0))
    x = np.zeros((1, 784))  # no ink; the background model of zeros gives log p_background(x) = 0
    log_px, elbo = np.array([49.0]), np.array([0.0])  # score 49, gap 49
    found = ood.tests(log_px, elbo, x, (28, 28), calibration)
    assert found["score"][0] == 49.0 and found["ink"][0] == 0
    p = {key: found[key][0] for key in ("p_score", "p_log_px", "p_ink", "p_gap")}
    # 50 of the 99 reference values are at most 49, and 50 at least 49; one (0) is at most 0 ink pixels
    assert p == pytest.approx({"p_score": 0.51, "p_log_px": 0.51, "p_ink": 0.04, "p_gap": 0.51})
    statistic = -2 * np.log(list(p.values())).sum()
    verdict = ood.assess(log_px, elbo, x, (28, 28), calibration, fpr=0.01)[0]
    assert verdict["p_value"] == pytest.approx((1 + np.sum(np.arange(1.0, 100.0) >= statistic)) / 100)
    assert verdict["gap"] == 49.0 and verdict["p_value_gap"] == pytest.approx(0.51)


def test_a_calibration_without_the_gap_is_combined_as_it_was_made(tmp_path):
    """Files written before the gap was a test load, and give Bonferroni's minimum of three."""
    ref = np.arange(99.0)
    np.savez(
        tmp_path / "ood.npz",
        log_probs=np.zeros((2, ood.NUM_CONTEXTS)),
        reference_score=ref,
        reference_log_px=ref,
        reference_ink=ref,
    )
    calibration = ood.Calibration.load(tmp_path / "ood.npz")
    assert calibration.reference_gap is None
    verdict = ood.assess(np.array([49.0]), np.array([0.0]), np.zeros((1, 784)), (28, 28), calibration, 0.01)[0]
    assert verdict["p_value"] == pytest.approx(3 * 0.04) and verdict["p_value_gap"] is None
    np.savez(
        tmp_path / "half.npz",
        log_probs=np.zeros((2, ood.NUM_CONTEXTS)),
        reference_score=ref,
        reference_log_px=ref,
        reference_ink=ref,
        reference_gap=ref,
    )  # a gap without statistics
    with pytest.raises(ValueError, match="cvae calibrate"):
        ood.Calibration.load(tmp_path / "half.npz")


def calibration_p(calibration, values):
    return ood._conformal(calibration.reference_score, np.asarray(values))


def test_the_abstention_curve_counts_flags_and_low_probabilities():
    probs = np.array([[0.99, 0.01], [0.6, 0.4], [0.2, 0.8], [0.55, 0.45]])
    labels = np.array([0, 1, 1, 0])
    flagged = np.array([False, False, True, False])
    by_threshold = {row["min_probability"]: row for row in abstention_curve(probs, labels, flagged)}
    assert by_threshold[0.0]["abstained"] == 0.25 and by_threshold[0.0]["accuracy_kept"] == pytest.approx(2 / 3)
    assert by_threshold[0.7]["abstained"] == 0.75 and by_threshold[0.7]["accuracy_kept"] == 1.0


def test_calibrating_again_replaces_the_calibration_with_the_same_one(calibrated):
    data, _, out, entry = calibrated
    with np.load(out / "ood.npz") as before:
        reference = before["reference_score"].copy()
    again = calibrate(out, data)
    with np.load(out / "ood.npz") as after:
        np.testing.assert_array_equal(after["reference_score"], reference)
    assert {k: v for k, v in again.items() if k not in ("seconds", "sha256")} == {
        k: v for k, v in entry.items() if k not in ("seconds", "sha256")
    }
