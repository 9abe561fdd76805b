"""The likelihood of grey levels: a discretized logistic of each pixel's 256 levels, checked against a direct
computation of its bins' masses, and a model of grey levels trained, exported and served end to end: the
service scores the levels as sent (no binarization unless asked), and draws levels 0-255."""

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fastapi.testclient import TestClient  # noqa: E402
from servers import wait_ready  # noqa: E402

from service.app import create_app  # noqa: E402
from service.settings import Settings  # noqa: E402
from training.cli import main  # noqa: E402
from training.configs import ModelConfig  # noqa: E402
from training.model import CVAE  # noqa: E402
from training.objectives import LEVELS, discretized_logistic_log_prob, log_px_z, split_output  # noqa: E402


def logistic_cdf(t: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-t))


def direct_log_prob(mean: np.ndarray, scale: np.ndarray, x: np.ndarray) -> np.ndarray:
    """log P(x) per pixel in float64: the logistic's mass on the bin of x, the end bins open, taken from the
    side of the mean where it does not cancel."""
    upper = np.where(x >= 1 - 1e-9, np.inf, (x + 0.5 / 255 - mean) / scale)
    lower = np.where(x <= 1e-9, -np.inf, (x - 0.5 / 255 - mean) / scale)
    right = lower > 0  # both bounds above the mean: survival functions
    mass = np.where(right, logistic_cdf(-lower) - logistic_cdf(-upper), logistic_cdf(upper) - logistic_cdf(lower))
    return np.log(mass)


def test_the_log_probability_is_each_bins_mass():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, 4000)
    log_scale = rng.uniform(-6, -1, 4000)
    x = rng.integers(0, 256, 4000) / 255.0
    x[:200], x[200:400] = 0.0, 1.0  # the open end bins
    pixels = (torch.from_numpy(a)[:, None] for a in (logits, log_scale, x))  # one pixel an image
    got = discretized_logistic_log_prob(*pixels).numpy()
    want = direct_log_prob(1 / (1 + np.exp(-logits)), np.exp(log_scale), x)
    exact = want > np.log(1e-5)  # above it, the bin's mass itself; below, its density at x times its width
    assert exact.sum() > 500 and (~exact).sum() > 500
    np.testing.assert_allclose(got[exact], want[exact], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(got[~exact], want[~exact], rtol=0.01)


def test_the_levels_probabilities_sum_to_one():
    levels = torch.arange(LEVELS, dtype=torch.float64)[:, None] / (LEVELS - 1)  # [256, 1]: each level a row
    for mean_logit, log_scale in [(-3.0, -5.0), (0.2, -3.0), (2.5, -1.0), (0.0, -7.0)]:
        logits = torch.full_like(levels, mean_logit)
        log_p = discretized_logistic_log_prob(logits, torch.full_like(levels, log_scale), levels)
        assert math.isclose(log_p.exp().sum().item(), 1.0, rel_tol=1e-5), (mean_logit, log_scale)


def test_the_decoder_gives_a_mean_and_a_scale_per_pixel():
    config = ModelConfig(image_shape=(6, 5), latent_dim=2, hidden_dims=(8,), num_classes=3, likelihood="logistic")
    model = CVAE(config)
    output = model.decode(torch.zeros(4, 2), torch.eye(3)[[0, 1, 2, 0]])
    logits, log_scale = split_output(output, config)
    assert output.shape == (4, 60) and logits.shape == log_scale.shape == (4, 30)
    x = torch.rand(4, 30).mul(255).round().div(255)
    assert torch.allclose(log_px_z(output, x, config), discretized_logistic_log_prob(logits, log_scale, x))


SHAPE = (10, 8)
CLASSES = ("dark", "mid", "light")


def shades(root, per_class=24):
    """Each class a different grey level over the whole image, with noise: only grey levels tell them apart."""
    rng = np.random.default_rng(1)
    x = np.concatenate([np.clip(rng.normal(40 + 80 * c, 12, (per_class, *SHAPE)), 0, 255) for c in range(3)])
    y = np.repeat(np.arange(3), per_class)
    np.savez(root / "shades.npz", x=x.astype(np.uint8), y=y, class_names=np.array(CLASSES))
    return root / "shades.npz"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("grey")
    checkpoint = root / "checkpoint.pt"
    tiny = ["--latent-dim", "2", "--hidden-dims", "16", "--epochs", "3", "--batch-size", "16"]
    tiny += ["--num-samples", "2", "--val-size", "9", "--likelihood", "logistic"]
    assert main(["train", "--data", str(shades(root)), "--out", str(checkpoint), *tiny]) == 0
    model = root / "repository" / "shades-cvae" / "1.0.0"
    assert main(["export", str(checkpoint), "--out-dir", str(model)]) == 0
    return model


def test_the_manifest_says_the_likelihood_and_the_decoders_two_halves(exported):
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["likelihood"]["type"] == "logistic" and manifest["likelihood"]["parameters"]["levels"] == 256
    assert manifest["files"]["decoder"]["outputs"]["logits"] == ["N", 2 * SHAPE[0] * SHAPE[1]]


def test_the_service_scores_grey_levels_as_sent_and_draws_levels(exported):
    rng = np.random.default_rng(2)
    grey = rng.integers(100, 140, SHAPE).astype(float)  # levels of the "mid" class, none of them 0 or 255
    body = {"images": [grey.tolist()], "num_samples": 8, "seed": 0, "include": ["settings", "x"]}
    with TestClient(create_app(Settings(model_dir=exported))) as client:
        wait_ready(client)
        assert client.get("/v1/model").json()["likelihood"]["type"] == "logistic"
        answer = client.post("/v1/classify", json=body).json()
        assert answer["settings"]["binarize"] == "none" and answer["settings"]["threshold"] is None
        scored = np.asarray(answer["results"][0]["x"]).reshape(SHAPE)
        np.testing.assert_allclose(scored, grey / 255.0, atol=1e-6)  # the levels themselves, not 0/1
        between = client.post("/v1/log-likelihood", json={**body, "images": [((grey + 0.3) / 255).tolist()]}).json()
        same = client.post("/v1/log-likelihood", json={**body, "images": [(grey / 255).tolist()]}).json()
        assert between["results"][0]["log_px"] == pytest.approx(same["results"][0]["log_px"])  # rounded to a level
        binary = client.post("/v1/log-likelihood", json={**body, "binarize": "threshold"}).json()
        assert set(np.ravel(binary["results"][0]["x"])) <= {0.0, 1.0}  # binarized only when asked
        drawn = client.post("/v1/samples", json={"n": 3, "y": 2, "seed": 0, "binary": True}).json()["samples"]
        x = np.asarray([s["x"] for s in drawn])
        assert x.shape == (3, SHAPE[0] * SHAPE[1]) and x.min() >= 0 and x.max() <= 255
        assert len(np.unique(x)) > 2  # grey levels, not a binary draw


def test_the_exported_scorer_gives_torchs_log_probabilities(exported):
    import onnxruntime as ort

    from training.export import ScorerGraph
    from training.model import Checkpoint

    model = Checkpoint.load(exported.parents[2] / "checkpoint.pt").build_model().eval()
    rng = np.random.default_rng(3)
    x = (rng.integers(0, 256, (5, SHAPE[0] * SHAPE[1])) / 255.0).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[[0, 1, 2, 1, 0]]
    eps = rng.normal(size=(4, 5, 2)).astype(np.float32)
    with torch.no_grad():
        want = ScorerGraph(model)(*(torch.from_numpy(a) for a in (x, y, eps)))
    session = ort.InferenceSession(str(exported / "scorer.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x, "y": y, "eps": eps})
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-3)


def test_a_model_of_grey_levels_is_calibrated_without_a_critic_and_refuses_one_by_name(exported, capsys):
    flags = ["--data-dir", "unread", "--critic-weight", "0.5"]
    assert main(["calibrate", str(exported), *flags]) == 2
    error = capsys.readouterr().err
    assert "shades-cvae is a model of grey levels" in error and "drop --critic-weight" in error
