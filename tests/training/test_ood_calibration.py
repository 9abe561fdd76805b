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
        np.testing.assert_allclose(stored["reference_log_px"], log_px, rtol=0, atol=1e-9)
    assert read_manifest(out)["files"]["ood"] == entry


def test_the_service_loads_the_calibration_and_checks_it(calibrated):
    _, _, out, entry = calibrated
    model = load_model(Settings(model_dir=out))
    assert model.ood is not None and len(model.ood.reference_score) == 40
    assert list(model.ood.reference_score) == sorted(model.ood.reference_score)
    assert entry["template"] == [list(t) for t in ood.TEMPLATE]


def test_conformal_p_values_count_the_reference():
    calibration = ood.Calibration(np.zeros((2, ood.NUM_CONTEXTS)), np.arange(99.0), np.arange(99.0), np.arange(99.0))
    np.testing.assert_allclose(calibration_p(calibration, [-1.0, 0.0, 49.5, 1e9]), [0.01, 0.02, 0.51, 1.0])


def test_the_ink_test_is_two_sided():
    reference = np.arange(99.0)
    np.testing.assert_allclose(ood._conformal_two_sided(reference, np.array([-1.0, 49.0, 200.0])), [0.02, 1.0, 0.02])


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
