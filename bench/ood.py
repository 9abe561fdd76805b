"""The out-of-distribution benchmark: does the service tell digits from things that are not?
Writes bench/results/ood.json and OOD.md.

    python -m bench.ood [--data-dir DIR] [--outliers-dir DIR] [--digits 10000] [--per-set 300] [--model-dir ...]

Every image goes through /v1/classify's code in process (service.engine.scoring.Scorer at its default
settings, grey images binarized as a request does by default, threshold 0.5): the first `--digits`
MNIST test digits against the sets of bench.ood_sets, letters and glyphs in both font families; with
--outliers-dir, real handwriting that is no MNIST digit too (training.handwriting: each source's
held-out part and the source left out, its classes that share a digit's shape apart).

Reported for each method, side by side (higher = more out of distribution): -log p(x) alone (the known
failure, Nalisnick et al. 2019); typicality, |log p(x) - the validation median|; complexity-corrected,
-log p(x) - the zlib code length of the packed bits in nats (Serra et al. 2020); the likelihood ratio
against the background model (service.engine.ood's score alone); ratio, log p(x) and ink combined by
Bonferroni (the method before the distance); the Mahalanobis distance over the answer's six numbers (the
method before the critic); the critic's log-odds of a digit (training.critic); and the service, the
distance and the critic combined, ranked by 1 - its p-value. AUROC against the test digits for each
set, the share of each set and of the digits flagged at the default rate (digits also binarized
x ~ Bernoulli(pixel)), abstention (by reason) and the accuracy kept on test digits at the defaults and
along the min_probability curve, and the cost of the assessment next to the whole classify call.
"""

from __future__ import annotations

import time
import zlib
from types import SimpleNamespace

import numpy as np

from bench.common import arguments, benchmark, document, mnist_digits, table
from bench.ood_sets import ood_sets
from service.engine import estimator, scoring
from service.engine.ood import auroc
from service.engine.pixels import binarize as binarize_pixels
from service.engine.scoring import Scorer
from service.schemas.options import ClassifyOptions
from training.abstention_curve import THRESHOLDS, curve
from training.handwriting import LEFT_OUT, OUTLIERS_DIR_HELP, HandwritingDataError, apart, load_handwriting, split


def _or(values: np.ndarray, fill: float) -> np.ndarray:
    """Numbers with `fill` where there is none (nan)."""
    return np.where(np.isnan(values), fill, values)


def features(scorer: Scorer, grey: np.ndarray, binarize: str, noise_seed: int = 0) -> dict:
    """The answers' numbers per image, and what the comparison methods need: grey images [N, 784] in
    [0, 1] binarized as the service does (`binarize`, its seed `noise_seed`) and scored at its defaults."""
    started = time.perf_counter()
    x = binarize_pixels(grey, binarize, 0.5, estimator.binarization_stream(noise_seed))
    s = scorer.score_now(x, ClassifyOptions(seed=noise_seed))
    seconds = time.perf_counter() - started
    v = s.verdicts
    three = np.stack([v.p_value_score, v.p_value_log_px, v.p_value_ink], axis=1)
    return {
        "log_px": s.bayes.log_px,
        "score": _or(v.score, -np.inf),
        "distance": _or(v.distance, np.inf),
        "critic": _or(v.critic, -np.inf),
        "p_value": v.p_value,
        "p_bonferroni": np.minimum(1.0, 3 * three.min(axis=1)),
        "flagged": v.flagged,
        "zlib_nats": np.array([len(zlib.compress(np.packbits(row > 0.5).tobytes(), 9)) * 8 * np.log(2) for row in x]),
        "probs": s.probs,
        "critic_probs": s.critic_probs,
        "abstained": s.abstained,
        "reasons": {reason: s.abstain[:, j] for j, reason in enumerate(scoring.REASONS)},
        "seconds": seconds,
    }


def methods(median_log_px: float) -> dict:
    return {
        "-log p(x)": lambda f: -f["log_px"],
        "typicality |log p(x) - median|": lambda f: np.abs(f["log_px"] - median_log_px),
        "complexity-corrected -log p(x) - L_zlib(x)": lambda f: -f["log_px"] - f["zlib_nats"],
        "likelihood ratio -(log p(x) - log p_bg(x))": lambda f: -f["score"],
        "ratio, log p(x) and ink, Bonferroni: 1 - p": lambda f: 1 - f["p_bonferroni"],
        "Mahalanobis distance over six numbers alone": lambda f: f["distance"],
        "the critic's log-odds alone (outlier exposure)": lambda f: -f["critic"],
        "the service: distance and critic, 1 - p": lambda f: 1 - f["p_value"],
    }


def assessment_cost(scorer: Scorer, grey: np.ndarray, repeats: int = 5) -> float:
    """Seconds per image of the assessment alone (the critic, then Scorer.assess: background model, the
    numbers, distance, p-values), on threshold-binarized images with a digit's log p(x), ELBO and
    per-class log p(x|y)."""
    x = (grey > 0.5).astype(np.float32)
    n = len(x)
    bayes = SimpleNamespace(log_px=np.full(n, -90.0), elbo=np.full(n, -95.0), kl_z=np.full(n, 25.0))
    log_px_y = np.tile(np.linspace(-90.0, -150.0, scorer.model.num_classes), (n, 1))
    started = time.perf_counter()
    for _ in range(repeats):
        log_odds, _ = scorer.model.critic_answers(x)
        scorer.assess(bayes, log_px_y, x, scorer.settings.ood_fpr, log_odds)
    return (time.perf_counter() - started) / (repeats * len(x))


def handwriting(folder: str, per_set: int, seed: int) -> dict[str, np.ndarray]:
    """Each source's held-out part (the left-out source whole), each class of a digit's shape apart, at
    most `per_set` images of each (a permutation seeded with `seed`), as grey images [N, 784] in [0, 1]."""
    rows, rng = {}, np.random.default_rng(seed)
    for name, part in split(load_handwriting(folder)).items():
        kept = "left out" if name == LEFT_OUT else "held out"
        for row, data in apart(part.held_out).items():
            chosen = np.sort(rng.permutation(len(data.y))[:per_set])
            rows[f"{row} ({kept}{'' if row == name else ', digit-shaped'})"] = data.x[chosen] / 255.0
    return rows


def measure(args) -> dict:
    model_dir, per_set, seed, noise_seed = args.model_dir, args.per_set, args.seed, args.noise_seed
    outliers_dir = args.outliers_dir
    by_hand = handwriting(outliers_dir, per_set, seed + 17) if outliers_dir else {}  # read first: fails fast
    scorer = Scorer.open(model_dir)  # the declared defaults, never the CVAE_* environment
    model = scorer.model
    if model.ood is None:
        raise SystemExit(f"{model_dir} has no out-of-distribution calibration: run `cvae calibrate {model_dir}`.")
    digits, labels = mnist_digits(args.digits, args.data_dir, "grey")
    sets = {**ood_sets(per_set, seed, digits[::-1], labels[::-1]), **by_hand}

    inliers = features(scorer, digits, "threshold", noise_seed)
    inliers_bernoulli = features(scorer, digits, "bernoulli", noise_seed)
    found = {name: features(scorer, grey, "threshold", noise_seed) for name, grey in sets.items()}
    median = float(np.median(model.ood.marginals[1]))
    table = {
        method: {name: auroc(score(inliers), score(f)) for name, f in found.items()}
        for method, score in methods(median).items()
    }
    correct = inliers["probs"].argmax(axis=1) == labels
    per_image_classify = inliers["seconds"] / len(digits)
    per_image_assess = assessment_cost(scorer, digits)
    return {
        "service_method": model.manifest["files"]["ood"]["method"],
        "ood_fpr": scorer.settings.ood_fpr,
        "min_probability": scorer.default_min_probability(),
        "auroc": table,
        "flagged": {name: float(f["flagged"].mean()) for name, f in found.items()},
        "images": {name: len(images) for name, images in sets.items()},
        "handwriting": f"held-out parts of {outliers_dir}" if outliers_dir else "skipped: no --outliers-dir given",
        "fpr_digits_threshold": float(inliers["flagged"].mean()),
        "fpr_digits_bernoulli": float(inliers_bernoulli["flagged"].mean()),
        "accuracy_all": float(correct.mean()),
        "abstained": float(inliers["abstained"].mean()),
        "abstained_by_reason": {reason: float(held.mean()) for reason, held in inliers["reasons"].items()},
        "accuracy_kept": float(correct[~inliers["abstained"]].mean()),
        "abstention_curve": curve(inliers["probs"], inliers["critic_probs"], labels, inliers["flagged"], THRESHOLDS),
        "ms_per_image_classify": 1000 * per_image_classify,
        "ms_per_image_assessment": 1000 * per_image_assess,
        "assessment_share_of_classify": per_image_assess / per_image_classify,
    }


def markdown(report: dict) -> str:
    r, names = report, list(report["flagged"])
    curve = [
        [str(row["min_probability"]), f"{row['abstained']:.2%}"]
        + ["-" if row["accuracy_kept"] is None else f"{row['accuracy_kept']:.2%}"]
        for row in r["abstention_curve"]
    ]
    digits = "MNIST test digits, binarize='{}' (false positives)"
    return document(
        f"Machine: {r['cpu_count']} CPUs; model `{r['model_dir']}`; {r['digits']} MNIST test digits against "
        f"{r['per_set']} images per set (seed {r['seed']}; requests' seed {r.get('noise_seed', 0)}), every image "
        "through /v1/classify's code at the default settings (binarize='threshold').",
        f"The service's assessment: {r['service_method']}. Real handwriting: {r['handwriting']}.",
        "AUROC against the test digits (1.0: every image of the set ranks as more unusual than every digit):",
        table(["method", *names], [[method, *(f"{row[n]:.3f}" for n in names)] for method, row in r["auroc"].items()]),
        f"Flagged at the default false-positive rate {r['ood_fpr']}:",
        table(
            ["set", "images", "flagged"],
            [[n, str(r["images"][n]), f"{r['flagged'][n]:.1%}"] for n in names]
            + [
                [digits.format(way), str(r["digits"]), f"{r[f'fpr_digits_{way}']:.2%}"]
                for way in ("threshold", "bernoulli")
            ],
        ),
        f"Abstention on the test digits at the defaults (min_probability {r['min_probability']}): "
        f"{r['abstained']:.2%} abstained ("
        + ", ".join(f"{share:.2%} {reason}" for reason, share in r["abstained_by_reason"].items())
        + f"; an image may have several reasons); accuracy of the rest {r['accuracy_kept']:.2%} "
        f"(of all, {r['accuracy_all']:.2%}). Along the curve (min_probability chosen by the caller; the "
        "default is chosen on validation digits, not these):",
        table(["min_probability", "abstained", "accuracy kept"], curve),
        f"Cost: the assessment takes {r['ms_per_image_assessment']:.3f} ms per image, "
        f"{r['assessment_share_of_classify']:.2%} of a /v1/classify answer at the defaults "
        f"({r['ms_per_image_classify']:.1f} ms per image in process).",
    )


def main(argv: list[str] | None = None) -> None:
    parser = arguments(
        "bench.ood",
        __doc__,
        digits=(10000, "MNIST test digits (all)"),
        per_set=(300, "images per set"),
        seed=(0, "seed of the sets"),
        noise_seed=(0, "seed of every request: binarization, samples"),
        outliers_dir=(str, f"{OUTLIERS_DIR_HELP} (without it, those rows are skipped)"),
    )
    benchmark(parser, argv, "ood", measure, markdown, (HandwritingDataError,))


if __name__ == "__main__":
    raise SystemExit(main())
