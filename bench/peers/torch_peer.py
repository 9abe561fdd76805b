"""Peer: what a user would write by hand: FastAPI + PyTorch eager on the training checkpoint,
one request at a time, the same request bodies as /v1.

    python -m bench.peers.torch_peer MODEL_DIR PORT
"""

from __future__ import annotations

import sys
import threading

import torch
import uvicorn
from fastapi import FastAPI

from training.model import Checkpoint
from training.objectives import bayes_posterior, class_log_joint, iwae_bound, log_weights
from training.train import one_hot


def rows(**columns: torch.Tensor) -> list[dict]:
    """One dict per row of the columns [N, ...]: what /v1 answers per image (or sample, or class)."""
    return [dict(zip(columns, row)) for row in zip(*(column.tolist() for column in columns.values()))]


def create_app(model_dir: str) -> FastAPI:
    checkpoint = Checkpoint.load(f"{model_dir}/checkpoint.pt")
    model = checkpoint.build_model()
    log_prior = torch.tensor(checkpoint.class_prior).log()
    c, d = model.config.num_classes, model.config.latent_dim
    lock = threading.Lock()
    app = FastAPI()

    def images(body) -> torch.Tensor:
        return (torch.tensor(body["images"], dtype=torch.float32).reshape(-1, 784) > 0.5).float()

    def posterior(body) -> dict[str, torch.Tensor]:
        """log p(x|y) with K samples for every class, one image at a time; Bayes' rule over them."""
        g = torch.Generator().manual_seed(body.get("seed", 0))
        k, classes = body.get("num_samples", 1000), one_hot(torch.arange(c), c)  # [C, C]
        bounds = [iwae_bound(log_weights(model, x.expand(c, -1), classes, k, g)[0]) for x in images(body)]
        log_px_y = torch.stack(bounds)  # [N, C]
        log_px, log_py_x = bayes_posterior(class_log_joint(log_px_y, log_prior))
        return {"log_px": log_px, "log_px_y": log_px_y, "log_py_x": log_py_x}

    @app.post("/v1/samples")
    def samples(body: dict):
        with lock, torch.no_grad():
            g = torch.Generator().manual_seed(body.get("seed") or 0)
            n = body.get("n", 1)
            y = torch.multinomial(log_prior.exp(), n, replacement=True, generator=g)
            z = torch.randn(n, d, generator=g)
            return {"samples": rows(y=y, z=z, mean=torch.sigmoid(model.decode(z, one_hot(y, c))))}

    @app.post("/v1/encode")
    def encode(body: dict):
        with lock, torch.no_grad():
            x = images(body)
            mu, logvar = model.encode(x.repeat_interleave(c, 0), one_hot(torch.arange(c).repeat(len(x)), c))
            mu, std = mu.reshape(len(x), c, d), torch.exp(0.5 * logvar).reshape(len(x), c, d)  # [N, C, d]
            return {"results": [rows(y=torch.arange(c), mu=m, std=s) for m, s in zip(mu, std)]}

    @app.post("/v1/log-likelihood")
    def log_likelihood(body: dict):
        with lock, torch.no_grad():
            s = posterior(body)
            return {"results": rows(log_px=s["log_px"], log_px_y=s["log_px_y"])}

    @app.post("/v1/classify")
    def classify(body: dict):
        with lock, torch.no_grad():
            probs = posterior(body)["log_py_x"].exp()
            return {"results": rows(probs=probs, predicted=probs.argmax(-1))}

    @app.get("/readyz")
    def ready():
        return {"status": "ready"}

    return app


def main() -> None:
    torch.set_num_threads(torch.get_num_threads())
    uvicorn.run(create_app(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")


if __name__ == "__main__":
    main()
