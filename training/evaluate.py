"""Test-set evaluation: log p(x) by importance sampling, Bayes'-rule accuracy,
calibration, and the model card with its sample and reconstruction grids."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from service.runtime import read_manifest
from training.card import write_card
from training.data import load_mnist
from training.export import write_manifest
from training.model import CVAE, Checkpoint
from training.objectives import bayes_posterior, class_log_joint, iwae_bound, log_weights
from training.train import binarize, one_hot

OTHER_METRICS = ("ais",)  # recorded by `cvae ais`


@torch.no_grad()
def score(
    model: CVAE,
    x: torch.Tensor,
    log_prior: torch.Tensor,
    num_samples: int,
    generator: torch.Generator,
    batch_size: int = 1,
    progress: bool = True,
    screen_samples: int = 0,
    margin: float = 20.0,
    labels: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per image and class: log p(x|y) estimated with K importance samples.

    With `screen_samples`, every class first gets that many samples, and only
    classes whose screened log p(x, y) is within `margin` nats of the image's
    best, and the true class when `labels` are given, get the rest of the K
    (the others keep their screening estimate).

    Returns log_px_y [N, C], log p(x) [N], log p(y|x) [N, C], and for every
    class the mean of log p(x|z,y) over its samples (reconstruction), the
    Monte Carlo KL(q(z|x,y) || p(z)) = mean of log q - log p(z), and the
    samples used, all [N, C].
    """
    num_classes = model.config.num_classes
    classes = one_hot(torch.arange(num_classes), num_classes)  # [C, C]
    adaptive = 0 < screen_samples < num_samples
    first = screen_samples if adaptive else num_samples
    parts = {"log_px_y": [], "recon": [], "kl": [], "num_samples": []}
    batches = range(0, len(x), batch_size)
    for start in tqdm(batches, desc="scoring", disable=not progress, mininterval=10, file=sys.stderr):
        xb = x[start : start + batch_size]
        rows_x = xb.repeat_interleave(num_classes, dim=0)  # [B*C, 784]: image-major, then class
        rows_y = classes.repeat(len(xb), 1)  # [B*C, C]
        log_w, lpx_z = log_weights(model, rows_x, rows_y, first, generator)  # [k, B*C] each
        bound, recon, kl = iwae_bound(log_w), lpx_z.mean(0), (lpx_z - log_w).mean(0)
        used = torch.full_like(bound, first)
        if adaptive:
            screened = bound.view(-1, num_classes) + log_prior
            keep = screened >= screened.amax(1, keepdim=True) - margin  # [B, C]
            if labels is not None:  # true-class figures all come from the full K
                keep[torch.arange(len(xb)), labels[start : start + batch_size]] = True
            keep = keep.flatten().nonzero()[:, 0]
            more_w, more_lpx = log_weights(model, rows_x[keep], rows_y[keep], num_samples - first, generator)
            all_w, all_lpx = torch.cat([log_w[:, keep], more_w]), torch.cat([lpx_z[:, keep], more_lpx])
            bound[keep], recon[keep], kl[keep] = iwae_bound(all_w), all_lpx.mean(0), (all_lpx - all_w).mean(0)
            used[keep] = num_samples
        for key, value in (("log_px_y", bound), ("recon", recon), ("kl", kl), ("num_samples", used)):
            parts[key].append(value.view(-1, num_classes))
    out = {key: torch.cat(value) for key, value in parts.items()}
    out["log_px"], out["log_py_x"] = bayes_posterior(class_log_joint(out["log_px_y"], log_prior))
    return out


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE over `bins` equal-width bins of the top-class probability."""
    confidence = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def summarize(scores: dict[str, torch.Tensor], labels: torch.Tensor, x_dim: int) -> dict:
    """Test metrics, in nats unless named otherwise."""
    true = labels[:, None]
    nll = -scores["log_px"].mean().item()
    recon = scores["recon"].gather(1, true).squeeze(1)
    kl = scores["kl"].gather(1, true).squeeze(1)
    probs = scores["log_py_x"].exp().numpy()
    return {
        "nll": nll,
        "bits_per_dim": nll / (x_dim * math.log(2)),
        "nll_given_true_class": -scores["log_px_y"].gather(1, true).mean().item(),
        "elbo_given_true_class": (recon - kl).mean().item(),
        "reconstruction_cross_entropy": -recon.mean().item(),
        "kl": kl.mean().item(),
        "accuracy": float((probs.argmax(1) == labels.numpy()).mean()),
        "ece_15_bins": expected_calibration_error(probs, labels.numpy()),
    }


def merged_metrics(manifest: dict, metrics: dict) -> dict:
    """This evaluation's `metrics` for the manifest, with what other commands recorded beside them
    (OTHER_METRICS) kept: a new evaluation replaces the old one's figures, not theirs."""
    recorded = manifest.get("metrics") or {}
    return metrics | {key: recorded[key] for key in OTHER_METRICS if key in recorded}


def run(
    model_dir: str | Path,
    data_dir: str | Path,
    num_samples: int = 5000,
    limit: int = 0,
    batch_size: int = 1,
    seed: int = 0,
    card: bool = True,
    screen_samples: int = 0,
    margin: float = 20.0,
) -> dict:
    """Evaluate the checkpoint in `model_dir` on the MNIST test set; record the metrics."""
    model_dir = Path(model_dir)
    checkpoint = Checkpoint.load(model_dir / "checkpoint.pt")
    model = checkpoint.build_model()
    data = load_mnist(data_dir)
    pixels, labels = torch.from_numpy(data.test_x), torch.from_numpy(data.test_y)
    x = binarize(pixels, torch.Generator().manual_seed(seed))  # binarized once, with `seed`
    if limit:
        x, labels = x[:limit], labels[:limit]
    log_prior = torch.tensor(checkpoint.class_prior).log()
    started = time.time()
    scores = score(
        model,
        x,
        log_prior,
        num_samples,
        torch.Generator().manual_seed(seed + 1),
        batch_size,
        screen_samples=screen_samples,
        margin=margin,
        labels=labels,
    )
    metrics = summarize(scores, labels, model.config.x_dim)
    metrics |= {
        "num_test_images": len(x),
        "num_importance_samples": num_samples,
        "screening": (
            {
                "samples": screen_samples,
                "margin_nats": margin,
                "mean_samples_per_class": float(scores["num_samples"].float().mean()),
            }
            if 0 < screen_samples < num_samples
            else None
        ),
        "binarization": f"x ~ Bernoulli(pixel/255), drawn once with torch seed {seed}",
        "noise_seed": seed + 1,
        "seconds": time.time() - started,
        "command": f"cvae evaluate {model_dir} --num-samples {num_samples}"
        + (f" --limit {limit}" if limit else "")
        + (f" --batch-size {batch_size}" if batch_size != 1 else "")
        + (f" --screen-samples {screen_samples} --margin {margin:g}" if 0 < screen_samples < num_samples else "")
        + (f" --seed {seed}" if seed else ""),
    }
    for name, value in metrics.items():
        print(f"{name:>30}: {value}")
    if card:
        manifest = read_manifest(model_dir)
        manifest["metrics"] = merged_metrics(manifest, metrics)
        write_manifest(model_dir, manifest)
        write_card(model, checkpoint, manifest, model_dir, x, labels, seed)
    return metrics
