"""`cvae calibrate`: the out-of-distribution calibration stored with a model: `ood_critic.onnx`, `ood.npz` and their
manifest entries.

0. The critic (training.critic) is trained on the training split's digits against made-up
   non-digits, or copied from another model directory trained on the same split.
1. The background model of service.engine.ood (a causal context model of local texture) is counted on
   the training split, each image binarized `BACKGROUND_DRAWS` times (x ~ Bernoulli(pixel/255)).
2. The validation split (never the test set) is binarized once and scored by the service's own
   code (service.engine.scoring.Scorer) at its declared defaults, never the CVAE_* environment; each
   image's numbers (service.engine.ood.FEATURES) are the reference: the first half gives the centre and
   covariance of the distance and the ranks of distance and critic, the second half the
   statistics that answers' p-values are counted against (service.engine.ood.Calibration.fit), the two
   pieces weighed by the critic's weight (CRITIC_WEIGHT unless told).
3. The same answers, with the critic's probabilities of the digits, give the classifier's accuracy
   and abstention (service.engine.scoring.abstention_reasons, every reason) on validation digits for a range of
   `min_probability`, and the default: the largest that keeps abstention within
   `ABSTENTION_BUDGET`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from service.engine import adaptive, background, ood
from service.engine.runtime import CRITIC, read_manifest, sha256
from service.engine.scoring import Scorer
from service.failures import ModelLoadError
from service.schemas.options import ClassifyOptions
from service.settings import Settings
from training import abstention_curve
from training import critic as critics
from training.card import refresh_card
from training.configs import CRITIC_WEIGHT, MIN_REFERENCE, CriticConfig
from training.data import Mnist
from training.datasets import training_set
from training.export import write_manifest
from training.handwriting import for_training
from training.train import binarize, split_config, split_train_val

OOD_FILE = "ood.npz"
BACKGROUND_DRAWS = 2
DEFAULT_FPR = 0.01
GREY_METHOD = (
    "split-conformal p-value of the Mahalanobis distance over six numbers per image (the likelihood ratio log p(x) - "
    "log p_background(x) against a causal context model of grey levels, log p(x), log(1 + pixels above 0.5), "
    "log(log p(x) - ELBO), log(1 + the margin of log p(x|y) between the two best classes), KL(q(z|x,y) || p(z))), "
    "its centre and covariance from the first half of the validation reference, against the second half's; no critic"
)
ABSTENTION_BUDGET = 0.02  # share of validation digits the defaults may abstain on, both reasons together


def fit_background(pixels: np.ndarray, shape: tuple[int, int], seed: int) -> tuple[np.ndarray, int]:
    """Context log-probabilities [2, NUM_CONTEXTS] counted on grey images [N, 784] (uint8),
    and the number of binary images counted."""
    rng = np.random.default_rng(seed)
    ink_counts = np.zeros(background.NUM_CONTEXTS)
    totals = np.zeros(background.NUM_CONTEXTS)
    for _ in range(BACKGROUND_DRAWS):
        for start in range(0, len(pixels), 5000):
            grey = pixels[start : start + 5000] / 255.0
            x = rng.random(grey.shape) < grey
            ctx = background.contexts(x, shape).ravel()
            totals += np.bincount(ctx, minlength=background.NUM_CONTEXTS)
            ink_counts += np.bincount(ctx, weights=x.ravel().astype(np.float64), minlength=background.NUM_CONTEXTS)
    return background.context_log_probs(ink_counts, totals), BACKGROUND_DRAWS * len(pixels)


def fit_grey_background(pixels: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, int]:
    """log p(level | context) [GREY_CONTEXTS, LEVELS] counted on grey images [N, H*W] (uint8) as stored, and the
    number of images counted."""
    counts = np.zeros((background.GREY_CONTEXTS, background.LEVELS))
    for start in range(0, len(pixels), 5000):
        levels, ctx = background.grey_contexts(pixels[start : start + 5000] / 255.0, shape)
        np.add.at(counts, (ctx.ravel(), levels.ravel()), 1.0)
    return background.grey_log_probs(counts), len(pixels)


def grey_without_critic(manifest: dict, critic_weight: float | None, *critic_sources: object) -> bool:
    """Whether the model is of grey levels, assessed without a critic (weight 0): ModelLoadError when asked for one."""
    if background.kind_for(manifest["likelihood"]["type"]) == "binary":
        return False
    if (critic_weight or 0.0) > 0 or any(source is not None for source in critic_sources):
        raise ModelLoadError(
            f"{manifest['name']} is a model of grey levels, assessed without a critic (the critic learns from made-up "
            "non-digits): drop --critic-weight, --critic-from, --critic-start and --outliers-dir."
        )
    return True


def calibrate(
    model_dir: str | Path,
    data: Mnist,
    limit: int = 0,
    seed: int = 0,
    critic: CriticConfig | None = None,
    critic_from: str | Path | None = None,
    critic_weight: float | None = None,
    outliers_dir: str | Path | None = None,
    critic_start: str | Path | None = None,
) -> dict:
    """Write the critic and ood.npz into `model_dir` and their entries into the manifest; return the
    ood entry. The critic is trained with `critic` (default CriticConfig()), or copied from the model
    directory `critic_from` when that one was trained on the same split; `critic_weight` weighs its
    evidence against the distance's (service.engine.ood). A critic trained here also learns from the
    real handwriting of `outliers_dir` (training.handwriting.for_training), and starts from the critic
    of the model directory `critic_start` (trained on the same split) when given: a fine-tuning. A model of grey
    levels has no critic: its background model counts grey levels, and its images are scored as stored."""
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    grey = grey_without_critic(manifest, critic_weight, critic_from, outliers_dir, critic_start)
    critic_weight = 0.0 if grey else CRITIC_WEIGHT if critic_weight is None else critic_weight
    split = split_config(manifest)
    split_record = {"seed": split.seed, "val_size": split.val_size}
    train, val = split_train_val(data, split)
    if limit:
        val = val[:limit]
    critic_weight = ood.critic_weight_of(critic_weight)
    if len(val) < MIN_REFERENCE:  # checked before the old calibration is taken out
        raise ValueError(
            f"calibration needs at least {MIN_REFERENCE} validation images, half for the distance's centre and "
            f"covariance and half for its reference (got {len(val)}); raise --limit."
        )
    if critic_from is not None and (outliers_dir is not None or critic_start is not None):
        raise ValueError("critic_from copies a critic; outliers_dir and critic_start train one: give one or the other.")
    reused = critics.reusable(Path(critic_from), split_record) if critic_from is not None else None
    start = (Path(critic_start), critics.reusable(Path(critic_start), split_record)) if critic_start else None
    handwriting = for_training(outliers_dir) if outliers_dir is not None else None  # read before anything changes
    if manifest["files"].pop("ood", None) is not None:  # the service scores below without the old calibration
        write_manifest(model_dir, manifest)
    shape = tuple(manifest["image_shape"])
    started = time.time()
    if grey:
        manifest["files"].pop(CRITIC, None)
        (model_dir / f"{CRITIC}.onnx").unlink(missing_ok=True)
    elif reused is not None:
        manifest["files"][CRITIC] = critics.copy(model_dir, Path(critic_from), reused, shape)
    else:
        manifest["files"][CRITIC] = critics.fit(
            model_dir,
            data.train_x[train],
            data.train_y[train],
            critic or CriticConfig(),
            split_record,
            handwriting,
            start,
        )
    write_manifest(model_dir, manifest)
    if grey:
        log_probs, counted = fit_grey_background(data.train_x[train], shape)
        x = data.train_x[val] / 255.0
    else:
        log_probs, counted = fit_background(data.train_x[train], shape, seed)
        x = binarize(torch.from_numpy(data.train_x[val]), torch.Generator().manual_seed(seed)).numpy()
    scorer = Scorer.open(model_dir)  # the old calibration taken out above: scores without an assessment
    scores = scorer.score_now(x, ClassifyOptions(seed=seed))  # each image as if sent alone
    log_odds, critic_probs = scorer.model.critic_answers(x)
    bayes = scores.bayes
    log_px_y = scores.classes.log_px_y
    reference = ood.features(bayes.log_px, bayes.elbo, bayes.kl_z, log_px_y, x, shape, log_probs, log_odds)
    np.savez(model_dir / OOD_FILE, log_probs=log_probs, reference=reference)

    calibration = ood.Calibration.load(model_dir / OOD_FILE, critic_weight=critic_weight)
    verdicts = ood.assess(reference, ood.ink_pixels(x), calibration, DEFAULT_FPR)
    flagged = verdicts.flagged
    probs = scores.probs
    curve = abstention_curve.curve(probs, critic_probs, data.train_y[val], flagged, abstention_curve.THRESHOLDS)
    without_vote = abstention_curve.curve(probs, None, data.train_y[val], flagged, abstention_curve.THRESHOLDS)
    entry = {
        "file": OOD_FILE,
        "sha256": sha256(model_dir / OOD_FILE),
        "method": GREY_METHOD if grey else ood.METHOD,
        "template": [
            list(offset) for offset in background.TEMPLATES[background.kind_for(manifest["likelihood"]["type"])]
        ],
        "features": list(ood.FEATURES),
        "critic_weight": critic_weight,
        "background": {"split": "training"}
        | (
            {"images_counted": counted, "pixels": f"grey levels, each neighbour cut to {background.GREY_BINS} bands"}
            if grey
            else {
                "binary_images_counted": counted,
                "binarization": f"x ~ Bernoulli(pixel/255), {BACKGROUND_DRAWS} draws per image, numpy seed {seed}",
            }
        ),
        "reference": {
            "split": "validation",
            "num_images": len(val),
            "indices": f"the first {len(val)} of the validation split (permutation seed {split.seed}, "
            f"{split.val_size} held out)",
            "binarization": "none: grey levels as stored" if grey else f"x ~ Bernoulli(pixel/255), torch seed {seed}",
            "settings": _settings_used(seed, scorer.settings, scorer.screening),
            "screening": scorer.screening.record(),
            "halves": f"the first {len(val) // 2} give the centre and covariance and rank the distance and the "
            f"critic, the other {len(val) - len(val) // 2} the statistics p-values are counted against",
        },
        "default_fpr": DEFAULT_FPR,
        "validation_flagged_at_default": float(flagged.mean()),
        "abstention": {
            "rule": abstention_curve.RULE,
            "curve": curve,
            "curve_without_vote": without_vote,  # requests with critic_vote false
            "budget": ABSTENTION_BUDGET,
            "default_min_probability": abstention_curve.largest_within(curve, ABSTENTION_BUDGET),
        },
        "seconds": time.time() - started,
    }
    manifest["files"]["ood"] = entry
    write_manifest(model_dir, manifest)
    if manifest.get("metrics", {}).get("nll") is not None:  # evaluated: the card has a section for this
        refresh_card(model_dir, manifest)
    return entry


def _settings_used(seed: int, s: Settings, screening: adaptive.Screening) -> str:
    return (
        f"the service's settings (K = {s.default_num_samples}, {screening.text()}, "
        f"tolerance {s.default_tolerance}), noise seed {seed}"
    )


def run(
    model_dir: str | Path,
    data_dir: str | Path | None,
    limit: int = 0,
    seed: int = 0,
    critic: CriticConfig | None = None,
    critic_from: str | Path | None = None,
    critic_weight: float | None = None,
    outliers_dir: str | Path | None = None,
    critic_start: str | Path | None = None,
    data: str | Path | None = None,
) -> dict:
    """`cvae calibrate` on the training images of `data` (training.datasets' forms), else MNIST's in `data_dir`."""
    grey_without_critic(read_manifest(model_dir), critic_weight, critic_from, outliers_dir, critic_start)  # first
    images = training_set(data_dir, data)
    entry = calibrate(model_dir, images, limit, seed, critic, critic_from, critic_weight, outliers_dir, critic_start)
    print(
        f"wrote {Path(model_dir) / OOD_FILE}: {entry['reference']['num_images']} validation images, "
        f"{entry['validation_flagged_at_default']:.2%} flagged at FPR {DEFAULT_FPR}, default min_probability "
        f"{entry['abstention']['default_min_probability']}, {entry['seconds']:.0f} s"
    )
    return entry
