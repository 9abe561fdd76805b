"""A model's own screening for adaptive scoring, chosen on validation digits: `cvae screening MODEL_DIR`.

Adaptive scoring gives every class `samples` draws first, then all K only to the classes whose
screened log p(x, y) lies within `margin` nats of the image's best. Each (image, class) draws
from its own noise stream, so the classes that get all K get the same samples whatever the
screening; a smaller screening only leaves more classes at their screening estimate. That is
cheaper, but a few draws from a heavy-tailed proposal can put a class that matters many nats
too low, and then it is screened out.

Every candidate is scored at the service's K, through the service's own code, on validation
digits; the cheapest (fewest samples per image) whose answers move no p(y|x) by more than
estimator.RELEVANT against REFERENCE (the screening every model had before it had its own) is
written to the manifest as `screening`. The service uses it unless CVAE_ADAPTIVE_SCREEN_SAMPLES
or CVAE_ADAPTIVE_MARGIN is set.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from service import estimator, rounds
from service.runtime import load_model
from service.settings import Settings
from training.data import Mnist

REFERENCE = rounds.DEFAULT_SCREENING
CANDIDATES = tuple(rounds.Screening(s, m) for m in (20.0, 15.0, 10.0) for s in (64, 16, 8))


def score(model, x: np.ndarray, k: int, screening: rounds.Screening | None = None, seed: int = 0, chunk_rows: int = 0):
    """The service's estimates for x [N, 784] at K = k, in this process (the service's chunking unless
    `chunk_rows`): (ClassEstimates, seconds)."""
    chunk_rows = chunk_rows or Settings().score_chunk_rows
    started = time.perf_counter()
    estimates = rounds.estimate_now(model, x, k, seed, chunk_rows, screening)
    return estimates.classes, time.perf_counter() - started


def answers(model, x: np.ndarray, k: int, screening: rounds.Screening, seed: int = 0) -> tuple[dict, float]:
    """The posterior and the samples spent per image, and the seconds taken."""
    estimates, seconds = score(model, x, k, screening, seed)
    posterior = estimator.bayes_rule(estimates, model.log_prior)
    return {"posterior": posterior, "samples": estimates.num_samples.sum(-1)}, seconds


def compare(reference: dict, other: dict, labels: np.ndarray) -> dict:
    """Accuracy and samples of `other`, and how far its answers lie from `reference`'s."""
    ref, new = reference["posterior"], other["posterior"]
    gap = np.abs(new.log_px - ref.log_px)
    return {
        "samples_per_image": float(other["samples"].mean()),
        "accuracy": float((new.log_py_x.argmax(-1) == labels).mean()),
        "mean_abs_diff_log_px": float(gap.mean()),
        "max_abs_diff_log_px": float(gap.max()),
        "max_abs_diff_py_x": float(np.abs(np.exp(new.log_py_x) - np.exp(ref.log_py_x)).max()),
        "changed_predictions": int((new.log_py_x.argmax(-1) != ref.log_py_x.argmax(-1)).sum()),
    }


def validation(data: Mnist, manifest: dict, limit: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The first `limit` digits of the split the model held out, x ~ Bernoulli(pixel/255) (numpy `seed`), labels."""
    from training.train import split_config, split_train_val

    _, val = split_train_val(data, split_config(manifest))
    pixels = data.train_x[val[:limit]]
    x = (np.random.default_rng(seed).random(pixels.shape) < pixels / 255.0).astype(np.float32)
    return x, data.train_y[val[:limit]].astype(np.int64)


def choose(rows: list[dict]) -> dict:
    """The cheapest row whose p(y|x) all lie within estimator.RELEVANT of the reference's."""
    passing = [r for r in rows if r["max_abs_diff_py_x"] <= estimator.RELEVANT]
    return min(passing, key=lambda r: r["samples_per_image"])  # the reference itself always passes


def run(model_dir: str | Path, data: Mnist, images: int = 5000, seed: int = 0) -> dict:
    """Score the candidates, write the chosen screening into the manifest, and return its entry."""
    from training.card import refresh_card
    from training.export import read_manifest, write_manifest

    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    settings = Settings(model_dir=model_dir, batching=False)
    model = load_model(settings)
    k = settings.default_num_samples
    x, labels = validation(data, manifest, images, seed)
    started = time.time()
    reference, _ = answers(model, x, k, REFERENCE, seed)
    rows = []
    for candidate in CANDIDATES:
        result = reference if candidate == REFERENCE else answers(model, x, k, candidate, seed)[0]
        rows.append({"samples": candidate.samples, "margin": candidate.margin, **compare(reference, result, labels)})
        print(f"screening {candidate.samples}, {candidate.margin:g} nats: {rows[-1]}", flush=True)
    chosen = choose(rows)
    entry = {
        "samples": chosen["samples"],
        "margin": chosen["margin"],
        "chosen_on": f"the first {len(x)} validation digits, x ~ Bernoulli(pixel/255) (numpy seed {seed}), "
        f"K = {k}, noise seed {seed}",
        "rule": f"the fewest samples per image among the candidates that move no p(y|x) by more than "
        f"{estimator.RELEVANT:g} against {REFERENCE.samples} samples and {REFERENCE.margin:g} nats",
        "candidates": rows,
        "seconds": time.time() - started,
    }
    calibrated = (manifest["files"].get("ood") or {}).get("reference", {}).get("settings", "")
    manifest["screening"] = entry
    write_manifest(model_dir, manifest)
    if calibrated and rounds.Screening(chosen["samples"], chosen["margin"]).text() not in calibrated:
        print(
            f"warning: the out-of-distribution reference was scored at {calibrated}; run "
            f"`cvae calibrate {model_dir}` again (with --critic-from {model_dir} to keep its critic)",
            flush=True,
        )
    if manifest.get("metrics", {}).get("nll") is not None:
        refresh_card(model_dir, manifest)
    return entry
