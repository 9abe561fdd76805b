"""Test-set evaluation through the engine (service.engine.scoring.Scorer): log p(x), Bayes'-rule accuracy and
calibration as the service answers each test image, the true class's figures from all K samples, and the
model card with its sample and reconstruction grids (drawn from the checkpoint)."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from service.engine import ood
from service.engine.runtime import read_manifest
from service.engine.scoring import Scorer, Scores, join
from service.schemas.options import ClassifyOptions
from training.card import write_card
from training.configs import OUTLIER_LIMIT
from training.data import load_mnist
from training.datasets import DataError, dataset_name, read_images
from training.export import write_manifest
from training.model import Checkpoint
from training.train import model_input

OTHER_METRICS = ("ais",)  # recorded by `cvae ais`
TRUE_CLASS = ("log_px_y", "reconstruction", "kl", "num_samples")  # the true class's estimates the figures take


@dataclass
class Scored:
    """The test images as the engine scored them: `scores`, and per image [N] the true class's estimates
    (`true`: TRUE_CLASS's fields of service.engine.estimator.ClassEstimates, each from all K samples) and whether
    the image was scored again for them (`rescored`)."""

    scores: Scores
    true: dict[str, np.ndarray]
    rescored: np.ndarray


def score(
    scorer: Scorer,
    x: np.ndarray,
    labels: np.ndarray,
    num_samples: int,
    seed: int,
    adaptive: bool = True,
    progress: bool = True,
) -> Scored:
    """Each binary image x[i] ([N, H*W] or [N, H, W]) scored alone through the engine with K = num_samples
    importance samples per class (no rounds) and seed `seed + i`: the service's answer to a request of that
    image alone with that seed, so that every image has noise streams of its own.

    With `adaptive`, the engine's screening gives all K only to the classes near the image's best, and
    log p(x) and p(y|x) are its answer (a class screened out, more than the margin below the best, counts
    with its screening estimate, as in the service). The true class's figures need all K: an image whose true class was
    screened out (labels [N]) is scored again with adaptive=False, and the true class's estimates come from
    there. Each (image, class, seed) has one noise stream, which screening only stops early, so these are the
    estimates the screened scoring would have given the true class had it kept it.
    """
    options = ClassifyOptions(num_samples=num_samples, max_num_samples=num_samples, adaptive=adaptive)
    parts, true, rescored = [], [], []
    for i in tqdm(range(len(x)), desc="scoring", disable=not progress, mininterval=10, file=sys.stderr):
        alone = options.model_copy(update={"seed": seed + i})
        scores = scorer.score_now(x[i : i + 1], alone)
        classes, y = scores.classes, labels[i]
        again = bool(classes.num_samples[0, y] < num_samples)
        if again:
            classes = scorer.score_now(x[i : i + 1], alone.model_copy(update={"adaptive": False})).classes
        parts.append(scores)
        true.append([getattr(classes, name)[0, y] for name in TRUE_CLASS])
        rescored.append(again)
    columns = np.array(true).reshape(len(x), len(TRUE_CLASS)).T  # [fields, N]
    return Scored(join(parts), dict(zip(TRUE_CLASS, columns)), np.array(rescored, dtype=bool))


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


def summarize(scored: Scored, labels: np.ndarray, x_dim: int) -> dict:
    """Test metrics, in nats unless named otherwise: log p(x) and p(y|x) as the engine answers, the
    true class's figures (given y_true) from its K-sample estimates."""
    nll = -float(scored.scores.bayes.log_px.mean())
    true, probs = scored.true, scored.scores.probs
    return {
        "nll": nll,
        "bits_per_dim": nll / (x_dim * math.log(2)),
        "nll_given_true_class": -float(true["log_px_y"].mean()),
        "elbo_given_true_class": float((true["reconstruction"] - true["kl"]).mean()),
        "reconstruction_cross_entropy": -float(true["reconstruction"].mean()),
        "kl": float(true["kl"].mean()),
        "accuracy": float((probs.argmax(1) == labels).mean()),
        "ece_15_bins": expected_calibration_error(probs, labels),
    }


def assessed(scorer: Scorer, images: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, H*W] (as the likelihood scores them) assessed at the service's defaults, as one request:
    whether each is flagged, and its statistic (higher: more unusual; service.engine.ood.Calibration.statistic)."""
    verdicts = scorer.score_now(images, ClassifyOptions(seed=seed)).verdicts
    return verdicts.flagged, scorer.model.ood.statistic(verdicts.distance, verdicts.critic)


def assessment_figures(scorer: Scorer, x: np.ndarray, outliers: dict[str, np.ndarray], seed: int) -> dict:
    """The share of the test images x flagged at the service's defaults and, for each named set of images
    that are not the model's kind, the share flagged and the AUROC of the statistic against the test images'."""
    flagged, inliers = assessed(scorer, x, seed)
    figures = {"num_test_images": len(x), "fpr": scorer.settings.ood_fpr, "test_flagged": float(flagged.mean())}
    figures["outliers"] = {}
    for name, images in outliers.items():
        caught, statistic = assessed(scorer, images, seed)
        figures["outliers"][name] = {
            "images": len(images),
            "flagged": float(caught.mean()),
            "auroc": ood.auroc(inliers, statistic),
        }
    return figures


def outlier_sets(paths: list[str], limit: int, likelihood: str, seed: int) -> dict[str, np.ndarray]:
    """The first `limit` images of each data set at `paths` (training.datasets' forms), as the likelihood scores
    them, by the set's name."""
    sets = {}
    for path in paths:
        images = read_images(path)
        pixels = torch.from_numpy(images.x[:limit])
        sets[f"{dataset_name(path)} ({Path(path).name})"] = model_input(
            pixels, likelihood, torch.Generator().manual_seed(seed)
        ).numpy()
    return sets


def test_set(path: str | Path, manifest: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The pixels [N, H*W] (uint8) and labels [N] of the test images at `path`: DataError unless they are of the
    model's size and classes."""
    images = read_images(path)
    if list(images.shape) != list(manifest["image_shape"]) or max(images.y) >= manifest["num_classes"]:
        raise DataError(
            f"{path} holds {images.shape[0]}x{images.shape[1]} images of {len(images.class_names)} classes, but "
            f"{manifest['name']} models {manifest['image_shape'][0]}x{manifest['image_shape'][1]} images of "
            f"{manifest['num_classes']}: give the test images of the model's own data."
        )
    return torch.from_numpy(images.x), torch.from_numpy(images.y)


def merged_metrics(manifest: dict, metrics: dict) -> dict:
    """This evaluation's `metrics` for the manifest, with what other commands recorded beside them
    (OTHER_METRICS) kept: a new evaluation replaces the old one's figures, not theirs."""
    recorded = manifest.get("metrics") or {}
    return metrics | {key: recorded[key] for key in OTHER_METRICS if key in recorded}


def run(
    model_dir: str | Path,
    data_dir: str | Path | None,
    num_samples: int = 5000,
    limit: int = 0,
    seed: int = 0,
    card: bool = True,
    screen_samples: int | None = None,
    margin: float | None = None,
    outliers: list[str] = (),
    outlier_limit: int = OUTLIER_LIMIT,
    test_data: str | Path | None = None,
) -> dict:
    """Evaluate the model in `model_dir` on the MNIST test set of `data_dir`, or the test images at `test_data`
    (training.datasets' forms), through the engine; record the metrics.

    `screen_samples` and `margin` set the engine's screening (Scorer.open's); neither: the model's own, as
    the service screens; `screen_samples` 0: every class gets all K. With `card`, the checkpoint draws the card's grids.
    A model with an out-of-distribution calibration is also assessed at the service's defaults on the test images
    and on the first `outlier_limit` images of each data set of `outliers`, images not of the model's kind.
    """
    model_dir = Path(model_dir)
    # read first: a missing checkpoint stops the command before it scores
    checkpoint = Checkpoint.load(model_dir / "checkpoint.pt") if card else None
    adaptive = screen_samples != 0
    screening = {"screen_samples": screen_samples, "margin": margin} if adaptive else {}
    scorer = Scorer.open(model_dir, max_num_samples=num_samples, **screening)
    if test_data is None:
        data = load_mnist(data_dir)
        pixels, labels = torch.from_numpy(data.test_x), torch.from_numpy(data.test_y)
    else:
        pixels, labels = test_set(test_data, scorer.model.manifest)
    likelihood = scorer.model.likelihood
    x = model_input(pixels, likelihood, torch.Generator().manual_seed(seed))  # binarized once, with `seed`
    if limit:
        x, labels = x[:limit], labels[:limit]
    started = time.time()
    scored = score(scorer, x.numpy(), labels.numpy(), num_samples, seed + 1, adaptive)
    metrics = summarize(scored, labels.numpy(), scorer.model.x_dim)
    # the looks that screen: one of K samples or more screens nothing
    looks = [list(look) for look in scorer.screening.looks() if look[0] < num_samples] if adaptive else []
    metrics |= {
        "num_test_images": len(x),
        "num_importance_samples": num_samples,
        "screening": (
            {
                "samples": looks[0][0],
                "margin_nats": looks[0][1],
                "looks": looks,
                "mean_samples_per_class": float(scored.scores.classes.num_samples.mean()),
                "images_rescored": int(scored.rescored.sum()),
            }
            if looks
            else None
        ),
        "binarization": f"x ~ Bernoulli(pixel/255), drawn once with torch seed {seed}"
        if likelihood == "bernoulli"
        else "none: the grey levels as stored, pixel/255",
        "noise_seed": seed + 1,
        "scoring": "each image alone by the service's engine, image i with seed noise_seed + i; the true class's "
        "figures from all K samples (an image whose screening dropped its true class scored again unscreened)",
        "seconds": time.time() - started,
        "command": f"cvae evaluate {model_dir} --num-samples {num_samples}"
        + (f" --data {test_data}" if test_data is not None else "")
        + (f" --limit {limit}" if limit else "")
        + (f" --screen-samples {screen_samples}" if screen_samples is not None else "")
        + (f" --margin {margin:g}" if margin is not None else "")
        + (f" --seed {seed}" if seed else "")
        + "".join(f" --outliers {path}" for path in outliers)
        + (f" --outlier-limit {outlier_limit}" if outliers and outlier_limit != OUTLIER_LIMIT else ""),
    }
    if scorer.model.ood is not None:
        others = outlier_sets(list(outliers), outlier_limit, likelihood, seed)
        metrics["assessment"] = assessment_figures(scorer, x.numpy(), others, seed + 1)
    for name, value in metrics.items():
        print(f"{name:>30}: {value}")
    if checkpoint is not None:
        manifest = read_manifest(model_dir)
        manifest["metrics"] = merged_metrics(manifest, metrics)
        write_manifest(model_dir, manifest)
        write_card(checkpoint.build_model(), checkpoint, manifest, model_dir, x, labels, seed)
    return metrics
