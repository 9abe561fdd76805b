"""Peer: LitServe with its dynamic batching, serving the same ONNX scorer for single-image
classification (exhaustive K samples per class, Bayes' rule), at POST /predict.

    python -m bench.peers.litserve_peer MODEL_DIR PORT MAX_BATCH_SIZE BATCH_TIMEOUT_S
"""

from __future__ import annotations

import sys

import litserve as ls
import numpy as np

from service.engine import estimator
from service.engine.runtime import load_model
from service.settings import Defaults


class ClassifyAPI(ls.LitAPI):
    def __init__(self, model_dir: str, **kwargs):
        super().__init__(**kwargs)
        self.model_dir = model_dir

    def setup(self, device):
        self.model = load_model(Defaults(model_dir=self.model_dir))

    def decode_request(self, request):
        x = (np.asarray(request["images"][0], dtype=np.float32) > 0.5).astype(np.float32)
        return x, int(request.get("num_samples", 100)), int(request.get("seed", 0))

    def predict(self, batch):
        items = batch if isinstance(batch, list) else [batch]
        c, d = self.model.num_classes, self.model.latent_dim
        k = items[0][1]
        x = np.stack([item[0] for item in items])
        rows_x = np.repeat(x, c, axis=0)
        rows_y = np.tile(np.arange(c), len(items))
        gens = [g for _, _, seed in items for g in estimator.noise_streams(seed, 1, c)]
        eps = np.stack([g.standard_normal((k, d), dtype=np.float32) for g in gens], axis=1)
        log_w, _, _ = self.model.log_weights(rows_x, rows_y, eps)
        log_px_y = estimator.log_mean_exp(log_w.astype(np.float64), axis=0).reshape(len(items), c)
        joint = log_px_y + self.model.log_prior
        log_px = estimator.logsumexp(joint, axis=-1)
        probs = np.exp(joint - log_px[:, None])
        outputs = [
            {"probs": p.tolist(), "predicted": int(p.argmax()), "log_px": float(lp)} for p, lp in zip(probs, log_px)
        ]
        return outputs if isinstance(batch, list) else outputs[0]  # LitServe's own batch, unbatch and encode


def main() -> None:
    model_dir, port, max_batch_size, batch_timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    api = ClassifyAPI(model_dir, max_batch_size=max_batch_size, batch_timeout=batch_timeout)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=120)
    server.run(host="127.0.0.1", port=port, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
