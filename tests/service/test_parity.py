"""The service's estimator agrees with the training package's evaluator on real test images."""

import asyncio

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from service.engine import adaptive, estimator  # noqa: E402
from service.engine.runtime import load_model  # noqa: E402
from service.settings import Settings  # noqa: E402
from training.data import load_mnist  # noqa: E402
from training.model import Checkpoint  # noqa: E402
from training.objectives import bayes_posterior, class_log_joint, iwae_bound, log_weights  # noqa: E402
from training.train import binarize  # noqa: E402

NUM_IMAGES = 100
K = 5000
SEED = 0


def test_log_px_and_predicted_class_agree_at_k_5000(shipped_model, mnist_dir):
    """Both runtimes score the same 100 test images with the same noise (the service's per-row
    streams): the estimators must agree, leaving only float32 rounding between them.

    With independent noise the two would differ by the Monte Carlo error of K = 5000 importance
    sampling itself, as two PyTorch runs with different seeds do, which says nothing about parity."""
    data = load_mnist(mnist_dir)
    x = binarize(torch.from_numpy(data.test_x[:NUM_IMAGES]), torch.Generator().manual_seed(0))
    checkpoint = Checkpoint.load(shipped_model / "checkpoint.pt")
    torch_model = checkpoint.build_model()
    log_prior = torch.tensor(checkpoint.class_prior).log()
    c, d = torch_model.config.num_classes, torch_model.config.latent_dim

    log_px_y = torch.empty(NUM_IMAGES, c)
    gens = estimator.noise_streams(SEED, NUM_IMAGES, c)  # the service's noise, row by row
    with torch.no_grad():
        for i in range(NUM_IMAGES):
            eps = torch.from_numpy(estimator.draw_noise(gens[i * c : (i + 1) * c], K, d))  # [K, C, D]
            rows = x[i : i + 1].expand(c, -1)
            log_w, _ = log_weights(torch_model, rows, torch.eye(c), K, eps=eps)
            log_px_y[i] = iwae_bound(log_w)
    reference_log_px, reference_log_py_x = bayes_posterior(class_log_joint(log_px_y, log_prior))

    model = load_model(Settings(model_dir=shipped_model))

    async def score(rows_x, rows_y, eps):
        return model.log_weights(rows_x, rows_y, eps)

    estimates = asyncio.run(adaptive.estimate_classes(score, x.numpy(), c, d, K, SEED, chunk_rows=50_000)).classes
    served = estimator.bayes_rule(estimates, model.log_prior)

    difference = np.abs(served.log_px - reference_log_px.numpy().astype(np.float64))
    print(f"mean |log p(x) difference| {difference.mean():.6f} nats, max {difference.max():.6f}")
    assert difference.mean() <= 0.1, f"mean |difference| {difference.mean():.4f} nats"
    assert difference.max() <= 0.01, f"max |difference| {difference.max():.4f} nats"
    agree = served.log_py_x.argmax(-1) == reference_log_py_x.numpy().argmax(-1)
    assert agree.all(), f"predicted classes differ on images {np.nonzero(~agree)[0].tolist()}"
