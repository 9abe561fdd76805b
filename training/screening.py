"""A model's own screening for adaptive scoring, chosen on validation digits: `cvae screening MODEL_DIR`.

Adaptive scoring gives every class a few draws first, then more only to the classes whose
screened log p(x, y) lies within a margin of the image's best: either all K at once, or first
a second look with more draws and a narrower margin (adaptive.Screening's recheck). Each (image,
class) draws from its own noise stream, so the classes that get all K get the same samples
whatever the screening; a smaller screening only leaves more classes at their screening
estimate. That is cheaper, but a few draws from a heavy-tailed proposal can put a class that
matters many nats too low, and then it is screened out.

So each look's margin comes from the errors its number of draws was seen to make on validation
digits: a class that matters (p(y|x) >= estimator.RELEVANT) lies within log(1 / RELEVANT) =
6.9 nats of the image's best, and the margin is that plus the largest amount by which that many
draws put a class within NEAR nats of the best further below the best than REFERENCE (the
screening every model had before it had its own) does, rounded up to a whole nat. These errors
come from every class near its image's best, most of which matter to no answer, so they show
the heavy tail that the answers of 5,000 images may not.

Each candidate of LOOKS, with those margins, is then scored at the service's default K (the
declared one, never the CVAE_* environment) through the service's own code; the cheapest
(fewest samples per image) whose answers move no p(y|x) by more than RELEVANT against
REFERENCE is written to the manifest as `screening`, which the service uses.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from service.engine import adaptive, estimator, ood
from service.engine.pixels import binarize
from service.engine.runtime import read_manifest
from service.engine.scoring import Scorer
from service.settings import Defaults
from training.data import Mnist

REFERENCE = adaptive.DEFAULT_SCREENING
NEAR = 10.0  # nats below the image's best at the reference: the classes whose screening errors are measured
LOOKS = ((64,), (16,), (8,), (16, 64), (8, 64))  # each candidate's screening sizes: one look, or a look and a recheck
SIZES = tuple(sorted({size for looks in LOOKS for size in looks}, reverse=True))


def candidates(errors: dict[int, float]) -> list[adaptive.Screening]:
    """Each of LOOKS with the margin each look's size needs, rounded up to a whole nat."""

    def look(size: int) -> tuple[int, float]:
        return size, float(math.ceil(needed_margin(errors[size])))

    return [adaptive.Screening(*look(first), look(then[0]) if then else None) for first, *then in LOOKS]


def score(
    model, x: np.ndarray, k: int, screening: adaptive.Screening | None = None, seed: int = 0, chunk_rows: int = 0
):
    """The service's estimates for x [N, 784] at K = k, in this process (the service's default chunking
    unless `chunk_rows`): (ClassEstimates, seconds)."""
    chunk_rows = chunk_rows or Defaults().score_chunk_rows
    started = time.perf_counter()
    estimates = adaptive.estimate_now(model, x, k, seed, chunk_rows, screening)
    return estimates.classes, time.perf_counter() - started


def answers(model, x: np.ndarray, k: int, screening: adaptive.Screening, seed: int = 0) -> tuple[dict, float]:
    """The posterior and the samples spent per image, and the seconds taken."""
    estimates, seconds = score(model, x, k, screening, seed)
    posterior = estimator.bayes_rule(estimates, model.log_prior)
    return {"posterior": posterior, "samples": estimates.num_samples.sum(-1)}, seconds


def underestimates(model, x: np.ndarray, reference: dict, sizes, seed: int = 0) -> dict[int, float]:
    """Per screening size: the largest amount by which its screened log p(x, y) puts a class that lies
    within NEAR nats of the image's best at the reference further below the best than the reference does."""
    log_py_x = reference["posterior"].log_py_x
    deficit = log_py_x.max(axis=1, keepdims=True) - log_py_x  # [N, C] nats below the best, at the reference
    near = deficit <= NEAR
    out = {}
    for size in sorted(set(sizes)):
        screened, _ = score(model, x, size, None, seed)  # the first `size` draws of each stream, as screening has
        joint = screened.log_px_y + model.log_prior
        out[size] = float(((joint.max(axis=1, keepdims=True) - joint) - deficit)[near].max())
    return out


def needed_margin(underestimate: float) -> float:
    """The margin that keeps a class with p(y|x) >= RELEVANT in play despite an error of `underestimate` nats."""
    return float(np.log(1 / estimator.RELEVANT) + underestimate)


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
    """The first `limit` digits of the split the model held out, x ~ Bernoulli(pixel/255) (numpy `seed`; a model
    of grey levels: pixel/255 as stored), labels."""
    from training.train import split_config, split_train_val

    _, val = split_train_val(data, split_config(manifest))
    grey = data.train_x[val[:limit]] / 255.0
    method = "bernoulli" if manifest["likelihood"]["type"] == "bernoulli" else "none"
    x = binarize(grey, method, 0.5, np.random.default_rng(seed))  # as a request with binarize=METHOD is
    return x, data.train_y[val[:limit]].astype(np.int64)


def passes(row: dict) -> bool:
    """Whether a candidate's answers stay within RELEVANT of the reference's and each look's margin covers
    the errors of its size."""
    covered = all(margin >= need for (_, margin), need in zip(row["looks"], row["needed_margins"]))
    return row["max_abs_diff_py_x"] <= estimator.RELEVANT and covered


def choose(rows: list[dict]) -> dict:
    """The cheapest passing row; when none passes, the first (the reference)."""
    passing = [r for r in rows if passes(r)]
    return min(passing, key=lambda r: r["samples_per_image"]) if passing else rows[0]


def entry_of(row: dict) -> dict:
    """The manifest's `screening` fields of a candidate's row (as adaptive.screening_for reads them)."""
    (samples, margin), *then = row["looks"]
    return {"samples": samples, "margin": margin} | (
        {"recheck": {"samples": then[0][0], "margin": then[0][1]}} if then else {}
    )


def scored_at(reference: dict, screening: adaptive.Screening) -> bool:
    """Whether an out-of-distribution calibration's reference record was scored at `screening`: by the
    looks it records, or, for a record made before it recorded them, by its settings text."""
    if "screening" in reference:
        return reference["screening"] == screening.record()
    return f"{screening.text()}, tolerance" in reference.get("settings", "")


def run(model_dir: str | Path, data: Mnist, images: int = 5000, seed: int = 0) -> dict:
    """Score the candidates, write the chosen screening into the manifest, and return its entry."""
    from training.card import refresh_card
    from training.export import write_manifest

    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    scorer = Scorer.open(model_dir)
    model, k = scorer.model, scorer.settings.default_num_samples
    x, labels = validation(data, manifest, images, seed)
    started = time.time()
    reference, _ = answers(model, x, k, REFERENCE, seed)
    errors = underestimates(model, x, reference, SIZES, seed)
    print(f"largest underestimates of a near class's distance from the best, by screening size: {errors}", flush=True)
    rows = []
    for candidate in [REFERENCE, *candidates(errors)]:
        result = reference if candidate == REFERENCE else answers(model, x, k, candidate, seed)[0]
        looks = candidate.record()
        needed = [needed_margin(errors[size]) for size, _ in looks]
        rows.append({"looks": looks, "needed_margins": needed, **compare(reference, result, labels)})
        print(f"{candidate.text()}: {rows[-1]}", flush=True)
    chosen = choose(rows)
    if not passes(chosen):
        print(f"warning: no candidate passes; keeping the reference, {chosen}", flush=True)
    entry = entry_of(chosen) | {
        "chosen_on": f"the first {len(x)} validation digits, x ~ Bernoulli(pixel/255) (numpy seed {seed}), "
        f"K = {k}, noise seed {seed}",
        "rule": f"each look's margin is log(1/{estimator.RELEVANT:g}) = {needed_margin(0):.1f} nats plus the "
        f"largest amount by which its number of draws put a class within {NEAR:g} nats of the image's best "
        f"(at {REFERENCE.samples} samples and {REFERENCE.margin:g} nats) further below it, rounded up to a whole "
        f"nat; chosen: the fewest samples per image among the candidates that move no p(y|x) by more than "
        f"{estimator.RELEVANT:g} against {REFERENCE.samples} samples and {REFERENCE.margin:g} nats",
        "underestimates": {str(size): value for size, value in errors.items()},
        "candidates": rows,
        "seconds": time.time() - started,
    }
    calibration = manifest["files"].get("ood")
    manifest["screening"] = entry
    write_manifest(model_dir, manifest)
    if calibration is not None and not scored_at(calibration["reference"], adaptive.screening_for(manifest)):
        weight = calibration.get("critic_weight", ood.EQUAL_WEIGHT)
        print(
            f"warning: the out-of-distribution reference was scored at {calibration['reference'].get('settings')}; "
            f"run `cvae calibrate {model_dir} --critic-from {model_dir} --critic-weight {weight}` again (which keeps "
            "its critic and weight)",
            flush=True,
        )
    if manifest.get("metrics", {}).get("nll") is not None:
        refresh_card(model_dir, manifest)
    return entry
