"""`cvae ais`: how far the service's answers at its default settings lie from annealed importance sampling.

For each of the first `limit` test images (binarized as `cvae evaluate` does), the service's
own scoring (service.engine.scoring.Scorer over the exported ONNX graphs, at the declared default
settings, never the CVAE_* environment) gives log p(x) with its standard error; AIS
(training.anneal) gives log p(x|y) for every class that carries p(y|x) >= 0.001 by the
service's answer, the other classes keep the service's estimate (together they carry under
1 % of p(x), a shift of under 0.01 nats). The per-image gaps go to `ais.json` in the model
directory, their summary into the manifest's metrics and the model card.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from service.engine.runtime import read_manifest
from service.engine.scoring import Scorer
from service.schemas.options import ClassifyOptions
from training.anneal import cvae_log_px_y
from training.card import refresh_card
from training.configs import AisConfig
from training.data import load_mnist
from training.export import write_manifest
from training.model import Checkpoint
from training.train import binarize

RELEVANT = 1e-3


def run(model_dir: str | Path, data_dir: str | Path, limit: int, config: AisConfig, seed: int = 0) -> dict:
    """Score the first `limit` test images both ways; write ais.json and the summary."""
    model_dir = Path(model_dir)
    checkpoint = Checkpoint.load(model_dir / "checkpoint.pt")
    model = checkpoint.build_model()
    data = load_mnist(data_dir)
    x = binarize(torch.from_numpy(data.test_x[:limit]), torch.Generator().manual_seed(seed))
    labels = data.test_y[:limit]
    log_prior = np.log(np.asarray(checkpoint.class_prior))
    started = time.time()
    served = Scorer.open(model_dir).score_now(x.numpy(), ClassifyOptions(seed=seed))  # each image as if sent alone
    service_seconds = time.time() - started

    log_px_y = np.nan_to_num(served.classes.log_px_y, nan=-np.inf)  # [N, C]
    probs = served.probs
    rows = np.argwhere(probs >= RELEVANT)  # (image, class) pairs that carry p(x)
    num_classes = model.config.num_classes
    started = time.time()
    result = cvae_log_px_y(
        model,
        x[rows[:, 0]],
        torch.eye(num_classes)[rows[:, 1]],
        config,
        torch.Generator().manual_seed(seed + 1),
    )
    ais_seconds = time.time() - started
    ais_log_px_y = log_px_y.copy()
    ais_var = np.zeros_like(log_px_y)
    ais_log_px_y[rows[:, 0], rows[:, 1]] = result.log_px_y.numpy()
    ais_var[rows[:, 0], rows[:, 1]] = result.std_error.numpy() ** 2
    ais_joint = ais_log_px_y + log_prior
    ais_log_px = np.logaddexp.reduce(ais_joint, axis=1)
    ais_weights = np.exp(ais_joint - ais_log_px[:, None])
    ais_std_error = np.sqrt((ais_weights**2 * ais_var).sum(1))

    bayes, images = served.bayes, []
    for i in range(len(labels)):
        images.append(
            {
                "index": i,
                "label": int(labels[i]),
                "service_log_px": float(bayes.log_px[i]),
                "service_std_error": float(bayes.log_px_std_error[i]),
                "service_reliable": bool(bayes.reliable[i]),
                "service_samples": int(served.samples_used[i]),
                "ais_log_px": float(ais_log_px[i]),
                "ais_std_error": float(ais_std_error[i]),
                "gap": float(bayes.log_px[i] - ais_log_px[i]),
            }
        )
    gaps = np.array([image["gap"] for image in images])
    summary = {
        "images": limit,
        "mean_abs_gap_nats": float(np.abs(gaps).mean()),
        "mean_gap_nats": float(gaps.mean()),
        "max_abs_gap_nats": float(np.abs(gaps).max()),
        "median_ais_std_error": float(np.median(ais_std_error)),
        "ais_rows": len(rows),
        "ais_acceptance": float(result.acceptance.mean()),
        "ais": asdict(config),
        "service_seconds": service_seconds,
        "ais_seconds": ais_seconds,
        "binarization": f"x ~ Bernoulli(pixel/255), drawn once with torch seed {seed}; service seed {seed}",
        "command": f"cvae ais {model_dir} --limit {limit} --chains {config.num_chains} "
        f"--temperatures {config.num_temperatures} --leapfrog-steps {config.leapfrog_steps} --start {config.start}",
    }
    (model_dir / "ais.json").write_text(json.dumps({"summary": summary, "images": images}, indent=1) + "\n")
    manifest = read_manifest(model_dir)
    manifest.setdefault("metrics", {})["ais"] = summary
    write_manifest(model_dir, manifest)
    refresh_card(model_dir, manifest)
    for key, value in summary.items():
        print(f"{key:>24}: {value}")
    return summary
