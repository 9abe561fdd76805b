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

from training.evaluate import score
from training.model import Checkpoint
from training.train import one_hot


def create_app(model_dir: str) -> FastAPI:
    checkpoint = Checkpoint.load(f"{model_dir}/checkpoint.pt")
    model = checkpoint.build_model()
    log_prior = torch.tensor(checkpoint.class_prior).log()
    c, d = model.config.num_classes, model.config.latent_dim
    lock = threading.Lock()
    app = FastAPI()

    def images(body) -> torch.Tensor:
        return (torch.tensor(body["images"], dtype=torch.float32).reshape(-1, 784) > 0.5).float()

    @app.post("/v1/samples")
    def samples(body: dict):
        with lock, torch.no_grad():
            g = torch.Generator().manual_seed(body.get("seed") or 0)
            n = body.get("n", 1)
            y = torch.multinomial(log_prior.exp(), n, replacement=True, generator=g)
            z = torch.randn(n, d, generator=g)
            mean = torch.sigmoid(model.decode(z, one_hot(y, c)))
            return {"samples": [{"y": int(y[i]), "z": z[i].tolist(), "mean": mean[i].tolist()} for i in range(n)]}

    @app.post("/v1/encode")
    def encode(body: dict):
        with lock, torch.no_grad():
            x = images(body)
            rows = x.repeat_interleave(c, 0)
            mu, logvar = model.encode(rows, one_hot(torch.arange(c).repeat(len(x)), c))
            std = torch.exp(0.5 * logvar)
            return {
                "results": [
                    [{"y": j, "mu": mu[i * c + j].tolist(), "std": std[i * c + j].tolist()} for j in range(c)]
                    for i in range(len(x))
                ]
            }

    def posterior(body):
        g = torch.Generator().manual_seed(body.get("seed", 0))
        return score(model, images(body), log_prior, body.get("num_samples", 1000), g, progress=False)

    @app.post("/v1/log-likelihood")
    def log_likelihood(body: dict):
        with lock, torch.no_grad():
            s = posterior(body)
            return {
                "results": [
                    {"log_px": float(s["log_px"][i]), "log_px_y": s["log_px_y"][i].tolist()}
                    for i in range(len(s["log_px"]))
                ]
            }

    @app.post("/v1/classify")
    def classify(body: dict):
        with lock, torch.no_grad():
            s = posterior(body)
            probs = s["log_py_x"].exp()
            return {
                "results": [
                    {"probs": probs[i].tolist(), "predicted": int(probs[i].argmax())} for i in range(len(probs))
                ]
            }

    @app.get("/readyz")
    def ready():
        return {"status": "ready"}

    return app


def main() -> None:
    torch.set_num_threads(torch.get_num_threads())
    uvicorn.run(create_app(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")


if __name__ == "__main__":
    main()
