"""The precision benchmark: how much one answer of the service can be trusted, and at what cost.

    python -m bench.precision [--data-dir DIR] [--images 200] [--seeds 5] [--accuracy-images 1000] [--duration 10]

For each configuration of the service's settings (its defaults; K and the screening named
explicitly, with a single round; and rounds to a tolerance), on MNIST test images binarized as
the model card's are (bench.common.binary_test_digits):

- precision, through the service's own code in process (service.engine.inference at those settings):
  the seed-to-seed standard deviation of log p(x) over `--seeds` seeds (median and 95th
  percentile over `--images` images), the median ratio of the reported log_px_std_error to
  that spread, the median ESS of the most probable class, the share of reliable answers
  (Pareto k-hat), the share that met the tolerance, and the samples spent per image;
- accuracy of argmax p(y|x) on `--accuracy-images` images (one seed);
- throughput of /v1/classify over HTTP, one image per request at concurrency 8, with the
  server started on those settings (bench.load, one keep-alive connection per worker).

Writes bench/results/precision.json and PRECISION.md, and prints the markdown.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time

import numpy as np

from bench.common import arguments, binarization, binary_test_digits, save, service
from bench.load import run_load
from service.engine.scoring import Scorer
from service.schemas.options import ClassifyOptions
from training.data import MnistDataError

CONFIGS = {
    "defaults": {},
    "K = 400, the model's own screening": {"CVAE_DEFAULT_NUM_SAMPLES": "400"},
    **{
        f"K = {k}, screening {screen}, margin {margin}, one round": {
            "CVAE_DEFAULT_NUM_SAMPLES": str(k),
            "CVAE_ADAPTIVE_SCREEN_SAMPLES": str(screen),
            "CVAE_ADAPTIVE_MARGIN": str(margin),
        }
        for k in (1000, 400)
        for screen, margin in ((64, 20), (16, 20), (8, 20), (8, 15))
    },
    **{
        f"tolerance {tolerance} nats, up to 8000 samples per class": {
            "CVAE_DEFAULT_TOLERANCE": tolerance,
            "CVAE_MAX_NUM_SAMPLES": "8000",
        }
        for tolerance in ("0.3", "0.1")
    },
}


def scorer_for(env: dict, model_dir: str) -> Scorer:
    """The in-process scorer at a configuration's settings: the service's declared defaults with `env`
    (the variables its server is started with) on top, never the variables of this process."""
    return Scorer.open(model_dir, **{key.removeprefix("CVAE_").lower(): value for key, value in env.items()})


def precision(scorer: Scorer, x: np.ndarray, seeds: int) -> dict:
    runs = [scorer.score_now(x, ClassifyOptions(seed=seed)) for seed in range(seeds)]
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
    }


def accuracy(scorer: Scorer, x: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(scorer.score_now(x, ClassifyOptions(seed=0)).predicted == labels))


def classify_throughput(env: dict, model_dir: str, images: np.ndarray, duration: float, concurrency: int) -> float:
    with service({**env, "CVAE_MODEL_DIR": model_dir, "CVAE_LOG_FORMAT": "text"}) as base:
        body = lambda i: {"images": [images[i % len(images)].tolist()], "seed": i}  # noqa: E731
        run_load(base, "POST", "/v1/classify", body, 1, 2, 1.0)  # warm-up
        result = run_load(base, "POST", "/v1/classify", body, 1, concurrency, duration)
    if result.errors:
        raise RuntimeError(f"{result.errors} failed requests")
    return result.images_per_second


def markdown(report: dict) -> str:
    lines = [
        f"Machine: {report['cpu_count']} CPUs; model `{report['model_dir']}`; {report['images']} test images "
        f"({report['binarization']}) x {report['seeds']} seeds for precision, {report['accuracy_images']} for "
        f"accuracy; /v1/classify one image per request at concurrency {report['concurrency']} for "
        f"{report['duration']} s. Command: `{report['command']}`.",
        "",
        "| settings | spread of log p(x): median / p95 (nats) | reported / spread | ESS | reliable | tolerance met "
        "| samples per image | accuracy | /v1/classify images/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["configs"].items():
        if name == "defaults":
            name = f"defaults (K = {r['num_samples']}, {r['screening']})"
        lines.append(
            f"| {name} | {r['spread_median']:.3f} / {r['spread_p95']:.3f} | {r['reported_over_spread_median']:.2f} "
            f"| {r['ess_median']:.1f} | {100 * r['reliable_share']:.0f} % | {100 * r['met_share']:.0f} % "
            f"| {r['samples_per_image']:.0f} | {100 * r['accuracy']:.2f} % | {r['classify_images_per_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__.split("\n\n")[0], out="bench/results")
    for name, default in (("--images", 200), ("--seeds", 5), ("--accuracy-images", 1000), ("--concurrency", 8)):
        parser.add_argument(name, type=int, default=default)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--configs", nargs="*", choices=list(CONFIGS), default=list(CONFIGS), help="default: all")
    args = parser.parse_args(argv)
    try:
        x, labels = binary_test_digits(max(args.images, args.accuracy_images), args.data_dir)
    except MnistDataError as error:
        parser.error(str(error))
    report = {
        **{key: getattr(args, key) for key in ("model_dir", "images", "seeds", "accuracy_images", "duration")},
        **{"concurrency": args.concurrency, "cpu_count": os.cpu_count(), "binarization": binarization()},
        "command": shlex.join(["python", "-m", "bench.precision", *(argv if argv is not None else sys.argv[1:])]),
        "configs": {},
    }
    for name in args.configs:
        env = CONFIGS[name]
        scorer = scorer_for(env, args.model_dir)
        started = time.perf_counter()
        row = {"num_samples": scorer.settings.default_num_samples, "screening": scorer.screening.text()}
        row |= precision(scorer, x[: args.images], args.seeds)
        row["accuracy"] = accuracy(scorer, x[: args.accuracy_images], labels[: args.accuracy_images])
        row["classify_images_per_s"] = classify_throughput(
            env, args.model_dir, x[: args.images], args.duration, args.concurrency
        )
        report["configs"][name] = row | {"seconds": time.perf_counter() - started}
        print(name, json.dumps(report["configs"][name]), flush=True)
    save(args.out, "precision", report, markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
