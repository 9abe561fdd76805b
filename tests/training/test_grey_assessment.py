"""The out-of-distribution assessment of a model of grey levels: a background model of grey levels given their
neighbours, checked against a direct count; `cvae calibrate` without a critic; the service's verdicts."""

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fastapi.testclient import TestClient  # noqa: E402
from servers import wait_ready  # noqa: E402
from synthetic import synthetic_mnist  # noqa: E402

from service.app import create_app  # noqa: E402
from service.engine import background, ood  # noqa: E402
from service.engine.runtime import CRITIC, load_model, read_manifest, sha256  # noqa: E402
from service.failures import ModelLoadError  # noqa: E402
from service.settings import Settings  # noqa: E402
from training.calibrate import calibrate, fit_grey_background  # noqa: E402
from training.cli import main  # noqa: E402
from training.export import export  # noqa: E402
from training.model import ModelConfig  # noqa: E402
from training.train import TrainConfig, split_train_val, train  # noqa: E402

SHAPE = (28, 28)


def direct_log_prob(image: np.ndarray, log_probs: np.ndarray) -> float:
    """log p_background of one image [H, W] of levels 0-255, pixel by pixel."""
    rows, cols = image.shape
    total = 0.0
    for r in range(rows):
        for c in range(cols):
            context = 0
            for place, (dr, dc) in enumerate(background.GREY_TEMPLATE):
                rr, cc = r + dr, c + dc
                level = image[rr, cc] if 0 <= rr < rows and 0 <= cc < cols else 0
                context += (int(level) * background.GREY_BINS // 256) * background.GREY_BINS**place
            total += log_probs[context, image[r, c]]
    return total


def test_the_grey_background_is_a_distribution_over_levels_counted_from_the_training_images():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 6 * 5)).astype(np.uint8)
    pixels[:, :10] = 0  # a dark band: its contexts see level 0 far more often
    log_probs, counted = fit_grey_background(pixels, (6, 5))
    assert counted == 40 and background.kind(log_probs) == "grey"
    np.testing.assert_allclose(np.exp(log_probs).sum(axis=1), 1.0, rtol=1e-9)  # every context's 256 levels
    dark = 0  # every neighbour in the lowest band
    assert log_probs[dark, 0] > np.log(0.5)  # dark above and to the left: mostly dark
    images = pixels.reshape(-1, 6, 5)
    got = background.log_prob(pixels[:5] / 255.0, (6, 5), log_probs)
    np.testing.assert_allclose(got, [direct_log_prob(image, log_probs) for image in images[:5]], rtol=1e-12)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    data = synthetic_mnist()
    config = TrainConfig(epochs=2, batch_size=50, num_samples=2, val_size=40, seed=3)
    model_config = ModelConfig(latent_dim=4, hidden_dims=(32, 32), likelihood="logistic")
    checkpoint = train(model_config, config, data)
    out = export(checkpoint, tmp_path_factory.mktemp("grey-model"))
    checkpoint.save(out / "checkpoint.pt")
    return data, config, out, calibrate(out, data), None


def test_calibration_counts_grey_levels_and_scores_the_validation_images_as_stored(calibrated):
    data, config, out, entry, _ = calibrated
    train_idx, val_idx = split_train_val(data, config)
    assert entry["critic_weight"] == 0.0 and entry["template"] == [list(t) for t in background.GREY_TEMPLATE]
    assert entry["background"]["images_counted"] == len(train_idx)
    assert entry["reference"]["num_images"] == len(val_idx) and entry["reference"]["binarization"].startswith("none")
    manifest = read_manifest(out)
    assert CRITIC not in manifest["files"] and not (out / f"{CRITIC}.onnx").exists()
    with np.load(out / "ood.npz") as stored:
        reference = stored["reference"]
    assert np.isnan(reference[:, ood.CRITIC]).all()  # no critic: its column is empty
    assert np.isfinite(reference[:, : len(ood.DISTANCE_FEATURES)]).all()
    assert load_model(Settings(model_dir=out)).ood.critic_weight == 0.0


def test_the_service_assesses_grey_images_without_a_critic(calibrated):
    data, _, out, entry, _ = calibrated
    grey = (data.test_x[:3] / 255.0).reshape(3, *SHAPE)
    blank = np.zeros(SHAPE)
    body = {"images": [*grey.tolist(), blank.tolist()], "num_samples": 8, "seed": 0, "include": ["ood"]}
    with TestClient(create_app(Settings(model_dir=out))) as client:
        wait_ready(client)
        answer = client.post("/v1/classify", json=body)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    for result in results:
        verdict = result["out_of_distribution"]
        assert verdict["critic"] is None and verdict["p_value_critic"] is None and 0 < verdict["p_value"] <= 1
    blank_verdict = results[-1]["out_of_distribution"]
    assert not blank_verdict["nearly_empty"]  # dark images are no rarity among grey levels: the p-value decides
    second_half = entry["reference"]["num_images"] - entry["reference"]["num_images"] // 2
    assert blank_verdict["p_value"] == pytest.approx(1 / (second_half + 1))  # as unusual as the reference can say


def test_a_calibration_of_binary_pixels_is_refused_for_a_model_of_grey_levels(calibrated, tmp_path):
    _, _, out, _, _ = calibrated
    copy = shutil.copytree(out, tmp_path / "copy")
    with np.load(copy / "ood.npz") as stored:
        reference = stored["reference"]
    np.savez(copy / "ood.npz", log_probs=np.zeros(background.SHAPES["binary"]), reference=reference)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["ood"]["sha256"] = sha256(copy / "ood.npz")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="background model of binary pixels, but this model scores grey"):
        load_model(Settings(model_dir=copy))


def test_evaluate_measures_the_verdicts_on_test_images_and_other_images_and_the_card_says_so(calibrated, tmp_path):
    data, _, out, _, _ = calibrated
    test_data = tmp_path / "test.npz"
    np.savez(test_data, x=data.test_x.reshape(-1, *SHAPE), y=data.test_y)
    noise = np.random.default_rng(4).integers(0, 256, (12, *SHAPE)).astype(np.uint8)
    np.savez(tmp_path / "noise.npz", x=noise, y=np.zeros(12, dtype=np.int64))
    flags = ["--num-samples", "4", "--limit", "10", "--outliers", str(tmp_path / "noise.npz"), "--outlier-limit", "5"]
    assert main(["evaluate", str(out), "--data", str(test_data), *flags]) == 0
    metrics = read_manifest(out)["metrics"]
    assert metrics["command"].endswith(f"--outliers {tmp_path / 'noise.npz'} --outlier-limit 5")
    figures = metrics["assessment"]
    assert figures["num_test_images"] == 10 and 0 <= figures["test_flagged"] <= 1
    (name, noise_figures), *_ = figures["outliers"].items()
    assert name == "noise (noise.npz)" and noise_figures["images"] == 5
    assert noise_figures["auroc"] == 1.0  # noise: more unusual than every test image
    assert noise_figures["flagged"] == 0.0  # yet 20 reference images can say p = 1/21 at least: above the 1 % rate
    card = (out / "MODEL_CARD.md").read_text()
    assert "in 256 grey levels" in card and "discretized logistic" in card and "Bernoulli" not in card
    assert "## Out-of-distribution verdicts on test images" in card
    assert "| noise (noise.npz) | 5 | 0.0 % | 1.0000 |" in card
    assert "images counted" not in card and "no critic" in card


def test_calibrate_reads_the_training_images_in_the_forms_train_reads(calibrated, tmp_path):
    data, _, out, _, _ = calibrated
    copy = shutil.copytree(out, tmp_path / "copy")
    np.savez(tmp_path / "train.npz", x=data.train_x.reshape(-1, *SHAPE), y=data.train_y)
    assert main(["calibrate", str(copy), "--data", str(tmp_path / "train.npz")]) == 0
    with np.load(out / "ood.npz") as first, np.load(copy / "ood.npz") as again:
        np.testing.assert_array_equal(first["log_probs"], again["log_probs"])  # the same split's training part
        np.testing.assert_array_equal(first["reference"], again["reference"])  # and validation part
