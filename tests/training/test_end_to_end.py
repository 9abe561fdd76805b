"""Tiny train -> export -> ONNX Runtime parity, on synthetic digits (runs anywhere, in seconds)."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from synthetic import synthetic_mnist  # noqa: E402

from service.engine.runtime import sha256  # noqa: E402
from training.export import export  # noqa: E402
from training.model import ModelConfig  # noqa: E402
from training.objectives import log_weights  # noqa: E402
from training.train import TrainConfig, train  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    data = synthetic_mnist()
    model_config = ModelConfig(latent_dim=4, hidden_dims=(32, 32))
    config = TrainConfig(epochs=3, batch_size=50, num_samples=2, classify_weight=1.0, val_size=50)
    checkpoint = train(model_config, config, data)
    out = export(checkpoint, tmp_path_factory.mktemp("model"))
    return checkpoint, out


def test_training_records_history_and_improves(exported):
    checkpoint, _ = exported
    history = checkpoint.extra["history"]
    assert len(history) == 3
    assert history[-1]["train_bound"] > history[0]["train_bound"]
    assert checkpoint.extra["validation"]["epoch"] == checkpoint.extra["best_epoch"]


def test_manifest_describes_the_files(exported):
    checkpoint, out = exported
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["latent_dim"] == 4 and manifest["num_classes"] == 10
    assert manifest["image_shape"] == [28, 28]
    assert manifest["likelihood"]["type"] == "bernoulli"
    assert sum(manifest["class_prior"]) == pytest.approx(1.0)
    assert manifest["training"]["config"]["epochs"] == 3
    for entry in manifest["files"].values():
        assert sha256(out / entry["file"]) == entry["sha256"]


def test_onnx_matches_pytorch(exported):
    checkpoint, out = exported
    model = checkpoint.build_model()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(7, 784, generator=g).round()
    y = torch.eye(10)[torch.arange(7)]
    z = torch.randn(7, 4, generator=g)
    encoder = ort.InferenceSession(str(out / "encoder.onnx"), providers=["CPUExecutionProvider"])
    decoder = ort.InferenceSession(str(out / "decoder.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        mu, logvar = model.encode(x, y)
        logits = model.decode(z, y)
    onnx_mu, onnx_logvar = encoder.run(None, {"x": x.numpy(), "y": y.numpy()})
    (onnx_logits,) = decoder.run(None, {"z": z.numpy(), "y": y.numpy()})
    assert np.abs(onnx_logits - logits.numpy()).max() <= 1e-4
    assert np.abs(onnx_mu - mu.numpy()).max() <= 1e-4
    assert np.abs(onnx_logvar - logvar.numpy()).max() <= 1e-4


def test_onnx_scorer_matches_pytorch_log_weights(exported):
    checkpoint, out = exported
    model = checkpoint.build_model()
    x = torch.rand(5, 784, generator=torch.Generator().manual_seed(1)).round()
    y = torch.eye(10)[[3, 1, 4, 1, 5]]
    with torch.no_grad():
        log_w, lpx_z = log_weights(model, x, y, 6, torch.Generator().manual_seed(2))
    eps = torch.randn((6, 5, 4), generator=torch.Generator().manual_seed(2))
    scorer = ort.InferenceSession(str(out / "scorer.onnx"), providers=["CPUExecutionProvider"])
    onnx_log_w, onnx_lpx_z, kl = scorer.run(None, {"x": x.numpy(), "y": y.numpy(), "eps": eps.numpy()})
    assert onnx_log_w.shape == (6, 5) and kl.shape == (5,)
    assert np.abs(onnx_log_w - log_w.numpy()).max() <= 1e-3
    assert np.abs(onnx_lpx_z - lpx_z.numpy()).max() <= 1e-3


def test_onnx_scorer_is_finite_where_the_decoder_saturates(exported):
    """Latents far out drive logits to +-100s: log p(x|z) must stay finite, not -inf or NaN."""
    _, out = exported
    scorer = ort.InferenceSession(str(out / "scorer.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).integers(0, 2, (3, 784)).astype(np.float32)
    eps = np.full((2, 3, 4), 300.0, dtype=np.float32)
    log_w, lpx_z, _ = scorer.run(None, {"x": x, "y": np.eye(10, dtype=np.float32)[:3], "eps": eps})
    assert np.isfinite(log_w).all() and np.isfinite(lpx_z).all()


def test_evaluation_gives_the_true_class_all_samples_the_engine_would_give_it(exported):
    """The engine screens classes out; the true class's figures still come from all K samples, and they are
    the estimates the engine gives it without screening (one noise stream per image, class and seed)."""
    from service.engine.scoring import Scorer
    from service.schemas.options import ClassifyOptions
    from training.evaluate import score

    _, out = exported
    data = synthetic_mnist()
    x = (data.test_x[:8] / 255).round().astype(np.float32)
    labels = (data.test_y[:8] + 1) % 10  # a wrong "true" class, which screening drops
    scorer = Scorer.open(out, screen_samples=8, margin=5.0)
    scored = score(scorer, x, labels, 64, seed=3, progress=False)
    used = scored.scores.classes.num_samples
    assert set(np.unique(used)) == {8, 64}  # some classes were screened out, the best was not
    assert (np.take_along_axis(used, scored.scores.probs.argmax(1)[:, None], 1) == 64).all()
    assert (scored.true["num_samples"] == 64).all() and scored.rescored.any()
    assert (used[np.arange(8), labels] < 64).tolist() == scored.rescored.tolist()
    for i in range(8):
        alone = ClassifyOptions(num_samples=64, max_num_samples=64, seed=3 + i)
        adaptive = scorer.score_now(x[i : i + 1], alone)
        exhaustive = scorer.score_now(x[i : i + 1], alone.model_copy(update={"adaptive": False}))
        assert scored.scores.bayes.log_px[i] == adaptive.bayes.log_px[0]  # the engine's answer, image alone
        for name in ("log_px_y", "reconstruction", "kl"):
            true_class = getattr(exhaustive.classes, name)[0, labels[i]]
            assert scored.true[name][i] == pytest.approx(true_class, rel=1e-5, abs=1e-4), (i, name)


def test_a_new_evaluation_keeps_what_other_commands_recorded():
    from training.evaluate import merged_metrics

    manifest = {"metrics": {"nll": 90.0, "accuracy": 0.9, "ais": {"mean_gap_nats": 0.1}}}
    merged = merged_metrics(manifest, {"nll": 85.0, "accuracy": 0.95})
    assert merged == {"nll": 85.0, "accuracy": 0.95, "ais": {"mean_gap_nats": 0.1}}
    assert merged_metrics({}, {"nll": 85.0}) == {"nll": 85.0}
