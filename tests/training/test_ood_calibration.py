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
    assert entry["reference"]["split"] == "validation" and entry["reference"]["num_images"] == len(val_idx) == 40
    assert entry["background"]["binary_images_counted"] == BACKGROUND_DRAWS * len(train_idx)
    x = binarize(torch.from_numpy(data.train_x[val_idx]), torch.Generator().manual_seed(0)).numpy()
    log_px = np.array([a["log_px"] for a in service_answers(out, x, 0)])
    with np.load(out / "ood.npz") as stored:
        assert stored["reference"].shape == (40, len(ood.FEATURES))
        np.testing.assert_allclose(stored["reference"][:, ood.FEATURES.index("log_px")], log_px, rtol=0, atol=1e-9)
    assert read_manifest(out)["files"]["ood"] == entry


def test_the_service_loads_the_calibration_and_checks_it(calibrated):
    _, _, out, entry = calibrated
    model = load_model(Settings(model_dir=out))
    assert model.ood is not None and len(model.ood.reference) == 40
    # the first 20 give the centre and covariance, the other 20 the distances counted against
    assert len(model.ood.reference_distance) == 20
    assert list(model.ood.reference_distance) == sorted(model.ood.reference_distance)
    assert entry["template"] == [list(t) for t in ood.TEMPLATE] and entry["features"] == list(ood.FEATURES)


def test_conformal_p_values_count_the_reference():
    values = np.array([-1.0, 0.0, 49.5, 1e9])
    np.testing.assert_allclose(ood._conformal(np.arange(99.0), values), [0.01, 0.02, 0.51, 1.0])


def _skewed(rng, n):
    """Correlated, skewed numbers, nothing like a Gaussian: what the distance must cope with."""
    base = rng.exponential(size=(n, len(ood.FEATURES)))
    return base @ np.triu(np.ones((len(ood.FEATURES), len(ood.FEATURES))))


def _p_values(calibration, values):
    ink = np.full(len(values), 100)
    return np.array([v["p_value"] for v in ood.assess(values, ink, calibration, 0.01)])


def test_the_distance_p_value_counts_the_second_half():
    rng = np.random.default_rng(0)
    reference = _skewed(rng, 2000)
    calibration = ood.Calibration.fit(np.zeros((2, ood.NUM_CONTEXTS)), reference)
    first, second = reference[:1000], reference[1000:]
    offset = second - first.mean(axis=0)
    expected = np.sqrt(np.einsum("ij,ij->i", offset, np.linalg.solve(np.cov(first, rowvar=False), offset.T).T))
    np.testing.assert_allclose(calibration.reference_distance, np.sort(expected), rtol=1e-9)
    queries = np.stack([calibration.center, calibration.center + 1e6, *_skewed(rng, 5)])
    d = calibration.distance(queries)
    counted = [(1 + np.sum(expected >= di)) / 1001 for di in d]
    np.testing.assert_allclose(_p_values(calibration, queries), counted)
    assert counted[0] == 1.0 and counted[1] == 1 / 1001


def test_the_false_positive_rate_holds_for_numbers_of_any_law():
    """Split conformal: fresh draws of the reference's law are flagged at most at the rate asked for."""
    rng = np.random.default_rng(1)
    calibration = ood.Calibration.fit(np.zeros((2, ood.NUM_CONTEXTS)), _skewed(rng, 4000))
    p = _p_values(calibration, _skewed(rng, 20000))
    for alpha in (0.01, 0.05, 0.2):
        # alpha, give or take the randomness of the 2,000 reference distances and of the 20,000 draws: 3 sd
        assert np.mean(p <= alpha) <= alpha + 3 * np.sqrt(alpha * (1 - alpha) * (1 / 2000 + 1 / 20000))


def test_one_number_far_off_is_enough_and_a_missing_one_is_as_far_as_it_gets():
    rng = np.random.default_rng(2)
    calibration = ood.Calibration.fit(np.zeros((2, ood.NUM_CONTEXTS)), _skewed(rng, 2000))
    typical = np.median(calibration.reference, axis=0)
    far, missing = typical.copy(), typical.copy()
    far[0] -= 50 * calibration.reference[:, 0].std()  # a likelihood ratio off the scale, the rest typical
    missing[1] = np.nan
    p = _p_values(calibration, np.stack([typical, far, missing]))
    assert p[0] > 0.5 and p[1] == p[2] == 1 / 1001


def test_the_ink_test_is_two_sided():
    reference = np.arange(99.0)
    np.testing.assert_allclose(ood._conformal_two_sided(reference, np.array([-1.0, 49.0, 200.0])), [0.02, 1.0, 0.02])


def test_the_abstention_curve_counts_flags_and_low_probabilities():
    probs = np.array([[0.99, 0.01], [0.6, 0.4], [0.2, 0.8], [0.55, 0.45]])
    labels = np.array([0, 1, 1, 0])
    flagged = np.array([False, False, True, False])
    by_threshold = {row["min_probability"]: row for row in abstention_curve(probs, labels, flagged)}
    assert by_threshold[0.0]["abstained"] == 0.25 and by_threshold[0.0]["accuracy_kept"] == pytest.approx(2 / 3)
    assert by_threshold[0.7]["abstained"] == 0.75 and by_threshold[0.7]["accuracy_kept"] == 1.0


def test_too_few_validation_images_are_refused_and_the_calibration_kept(calibrated):
    data, _, out, entry = calibrated
    with pytest.raises(ValueError, match="raise --limit"):
        calibrate(out, data, limit=3)
    assert read_manifest(out)["files"]["ood"] == entry


def test_calibrating_again_replaces_the_calibration_with_the_same_one(calibrated):
    data, _, out, entry = calibrated
    with np.load(out / "ood.npz") as before:
        reference = before["reference"].copy()
    again = calibrate(out, data)
    with np.load(out / "ood.npz") as after:
        np.testing.assert_array_equal(after["reference"], reference)
    assert {k: v for k, v in again.items() if k not in ("seconds", "sha256")} == {
        k: v for k, v in entry.items() if k not in ("seconds", "sha256")
    }
