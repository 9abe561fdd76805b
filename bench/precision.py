"""The precision benchmark: how much one answer of the service can be trusted, and at what cost.
Writes bench/results/precision.json and PRECISION.md.

    python -m bench.precision [--data-dir DIR] [--images 200] [--seeds 5] [--accuracy-images 1000]

For each configuration of the scorer (its defaults; K and the screening named, with a single round;
rounds to a tolerance), in process through Scorer.open at that configuration (the code that scores
/v1/classify), on MNIST test images binarized as the model card's are: the seed-to-seed standard
deviation of log p(x) over `--seeds` seeds (median and 95th percentile over `--images` images), the
median ratio of the reported log_px_std_error to it, the median ESS of the most probable class, the
shares of reliable answers (Pareto k-hat) and of those that met the tolerance, the samples spent and
the images scored per second in those runs, and the accuracy on `--accuracy-images` images.
"""

from __future__ import annotations

import json
import time

import numpy as np

from bench.common import TEST_SEED, arguments, benchmark, document, mnist_digits, table
from service.engine.scoring import Scorer
from service.schemas.options import ClassifyOptions

ONE_ROUND = {  # name -> Scorer.open's keywords
    f"K = {k}, screening {s}, margin {m}, one round": {"default_num_samples": k, "screen_samples": s, "margin": m}
    for k in (1000, 400)
    for s, m in ((64, 20), (16, 20), (8, 20), (8, 15))
}
TOLERANCE = {
    f"tolerance {t} nats, up to 8000 samples per class": {"default_tolerance": t, "max_num_samples": 8000}
    for t in (0.3, 0.1)
}
CONFIGS = {"defaults": {}, "K = 400, the model's own screening": {"default_num_samples": 400}, **ONE_ROUND, **TOLERANCE}


def precision(scorer: Scorer, x: np.ndarray, seeds: int) -> dict:
    started = time.perf_counter()
    runs = [scorer.score_now(x, ClassifyOptions(seed=seed)) for seed in range(seeds)]
    seconds = time.perf_counter() - started
    log_px = np.stack([run.bayes.log_px for run in runs])  # [S, N]
    reported = np.stack([run.bayes.log_px_std_error for run in runs])  # [S, N]
    reported = np.where(np.isfinite(reported), reported, np.inf)
    spread = log_px.std(axis=0, ddof=1)
    best = [np.nan_to_num(run.classes.log_px_y, nan=-np.inf).argmax(axis=1) for run in runs]
    top_ess = np.concatenate([run.classes.ess[np.arange(len(x)), b] for run, b in zip(runs, best)])
    return {
        "spread_median": float(np.median(spread)),
        "spread_p95": float(np.percentile(spread, 95)),
        "reported_over_spread_median": float(np.median(reported.mean(axis=0) / spread)),
        "ess_median": float(np.median(top_ess)),
        "reliable_share": float(np.mean([run.bayes.reliable for run in runs])),
        "met_share": float(np.mean([run.met for run in runs])),
        "samples_per_image": float(np.mean([run.samples_used for run in runs])),
        "images_per_s": seeds * len(x) / seconds,
    }


def accuracy(scorer: Scorer, x: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(scorer.score_now(x, ClassifyOptions(seed=0)).predicted == labels))


def markdown(report: dict) -> str:
    rows = []
    for name, r in report["configs"].items():
        if name == "defaults":
            name = f"defaults (K = {r['num_samples']}, {r['screening']})"
        rows.append(
            [name, f"{r['spread_median']:.3f} / {r['spread_p95']:.3f}", f"{r['reported_over_spread_median']:.2f}"]
            + [f"{r['ess_median']:.1f}", f"{100 * r['reliable_share']:.0f} %", f"{100 * r['met_share']:.0f} %"]
            + [f"{r['samples_per_image']:.0f}", f"{100 * r['accuracy']:.2f} %", f"{r['images_per_s']:.1f}"]
        )
    head = ["settings", "spread of log p(x): median / p95 (nats)", "reported / spread", "ESS", "reliable"]
    head += ["tolerance met", "samples per image", "accuracy", "images/s in process"]
    return document(
        f"Machine: {report['cpu_count']} CPUs; model `{report['model_dir']}`; {report['images']} test images "
        f"({report['binarization']}) x {report['seeds']} seeds for precision and speed, scored in process "
        f"{report['images']} to a call, {report['accuracy_images']} for accuracy. Command: `{report['command']}`.",
        table(head, rows),
    )


def measure(args) -> dict:
    x, labels = mnist_digits(max(args.images, args.accuracy_images), args.data_dir, "binary")
    report = {"binarization": f"x ~ Bernoulli(pixel/255), drawn once with torch seed {TEST_SEED}", "configs": {}}
    for name in args.configs:
        scorer = Scorer.open(args.model_dir, **CONFIGS[name])  # the declared defaults with these on top
        started = time.perf_counter()
        row = {"num_samples": scorer.settings.default_num_samples, "screening": scorer.screening.text()}
        row |= precision(scorer, x[: args.images], args.seeds)
        row["accuracy"] = accuracy(scorer, x[: args.accuracy_images], labels[: args.accuracy_images])
        report["configs"][name] = row | {"seconds": time.perf_counter() - started}
        print(name, json.dumps(report["configs"][name]), flush=True)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = arguments(
        "bench.precision",
        __doc__,
        images=(200, "test images for precision and speed"),
        seeds=(5, "seeds per image"),
        accuracy_images=(1000, "test images for accuracy"),
    )
    parser.add_argument("--configs", nargs="*", choices=list(CONFIGS), default=list(CONFIGS), help="default: all")
    benchmark(parser, argv, "precision", measure, markdown)


if __name__ == "__main__":
    raise SystemExit(main())
