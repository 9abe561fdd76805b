"""The service's estimator agrees with the training package's evaluator on real test images."""

import asyncio

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from service import estimator  # noqa: E402
from service.runtime import load_model  # noqa: E402
from service.settings import Settings  # noqa: E402
from training.data import load_mnist  # noqa: E402
from training.evaluate import score as reference_score  # noqa: E402
from training.model import Checkpoint  # noqa: E402
from training.train import binarize  # noqa: E402

NUM_IMAGES = 100
K = 5000


def test_log_px_and_predicted_class_agree_at_k_5000(shipped_model, mnist_dir):
    data = load_mnist(mnist_dir)
    x = binarize(torch.from_numpy(data.test_x[:NUM_IMAGES]), torch.Generator().manual_seed(0))
    checkpoint = Checkpoint.load(shipped_model / "checkpoint.pt")
    log_prior = torch.tensor(checkpoint.class_prior).log()
    reference = reference_score(
        checkpoint.build_model(), x, log_prior, K, torch.Generator().manual_seed(1), progress=False
    )

    model = load_model(Settings(model_dir=shipped_model))

    async def score(rows_x, rows_y, eps):
        return model.log_weights(rows_x, rows_y, eps)

    estimates = asyncio.run(
        estimator.estimate_classes(score, x.numpy(), model.num_classes, model.latent_dim, K, 0, chunk_rows=50_000)
    )
    served = estimator.bayes_rule(estimates, model.log_prior)

    difference = np.abs(served.log_px - reference["log_px"].numpy().astype(np.float64))
    assert difference.mean() <= 0.1, f"mean |difference| {difference.mean():.4f} nats"
    agree = served.log_py_x.argmax(-1) == reference["log_py_x"].numpy().argmax(-1)
    assert agree.all(), f"predicted classes differ on images {np.nonzero(~agree)[0].tolist()}"
