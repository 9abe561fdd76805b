"""How many screening samples adaptive scoring needs: the answers and the cost at each.

    MNIST_DIR=... python -m bench.screening [--model-dir DIR] [--split validation] [--images 5000] \
        [--screen 64 16 8] [--margins 20 15 10] [--own]

Adaptive scoring first gives every class a few samples (the screening) and all K only to the
classes whose screened log p(x, y) lies within the margin of the image's best. Each (image,
class) draws from its own noise stream, so the classes that get all K get the same samples
whatever the screening; a smaller screening changes only which classes get them and the
estimates of those that do not.

On the first `--images` binarized MNIST digits of the split (the model's validation split, where
the size is chosen, or the test set, to confirm it), in process through the service's own
scoring (service.rounds at the settings' K), for each screening
size and margin (every pair of `--screen` and `--margins`): samples per image, images per
second, accuracy of argmax p(y|x), and against the first pair (the first size and margin) the
mean and largest |difference| in log p(x), the largest |difference| in any p(y|x), and the
images whose predicted class changed. With `--own`, a row for the model's own screening (one
look or two). The last row is the first pair again with noise seed 1: how far the answers move
between seeds, against which the other rows' differences are read.
The pairs run one after the other, in `--rounds` rounds, and each speed is the median round.

Writes bench/results/screening/<version>/<split>/screening.json and SCREENING.md, and prints the markdown.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

import numpy as np

from bench.precision import mnist_test
from bench.report import save
from service import rounds
from service.runtime import load_model
from service.settings import SHIPPED_MODEL, Settings
from training.data import load_mnist
from training.screening import SIZES, answers, compare, validation


def markdown(report: dict) -> str:
    lines = [
        f"Machine: {report['cpu_count']} CPUs; model `{report['model_dir']}`; the first {report['images']} MNIST "
        f"{report['split']} digits binarized once; K = {report['num_samples']}, noise seed 0 unless named, in "
        f"process; speeds are the median of {report['rounds']} round(s). Command: `{report['command']}`.",
        "",
        f"| screening samples, margin (nats) | samples per image | images/s | against {report['reference']} "
        "| accuracy | \\|Δ log p(x)\\| mean / max (nats) | largest \\|Δ p(y\\|x)\\| | predictions changed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["screenings"].items():
        lines.append(
            f"| {name} | {r['samples_per_image']:.0f} | {r['images_per_s']:.1f} | {r['speedup']:.2f}x "
            f"| {100 * r['accuracy']:.2f} % | {r['mean_abs_diff_log_px']:.4f} / {r['max_abs_diff_log_px']:.4f} "
            f"| {r['max_abs_diff_py_x']:.2g} | {r['changed_predictions']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", default=str(SHIPPED_MODEL))
    parser.add_argument("--split", choices=["validation", "test"], default="validation")
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument(
        "--screen", type=int, nargs="+", default=list(SIZES), help="screening sizes (default %(default)s)"
    )
    parser.add_argument(
        "--margins", type=float, nargs="+", default=[20.0, 15.0, 10.0], help="margins in nats (default %(default)s)"
    )
    parser.add_argument(
        "--own", action="store_true", help="also the model's own screening (its manifest's, chosen by cvae screening)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None, help="default: bench/results/screening/<version>/<split>")
    args = parser.parse_args(argv)
    mnist_dir = os.environ.get("MNIST_DIR")
    if not mnist_dir:
        parser.error("set MNIST_DIR: the benchmark scores MNIST digits")
    if len(set(args.screen)) != len(args.screen) or min(args.screen) < 1:
        parser.error("--screen takes distinct sizes of at least 1")
    if len(set(args.margins)) != len(args.margins) or min(args.margins) <= 0:
        parser.error("--margins takes distinct positive margins")
    if args.rounds < 1 or args.images < 1:
        parser.error("--rounds and --images must be at least 1")
    settings = Settings(model_dir=args.model_dir)
    model = load_model(settings)
    k = settings.default_num_samples
    if max(args.screen) >= k:
        parser.error(f"--screen sizes must be below K = {k}, or there is nothing to screen")
    if args.split == "test":
        x, labels = mnist_test(mnist_dir, args.images)
    else:
        x, labels = validation(load_mnist(mnist_dir), model.manifest, args.images)
    # the first margin and the first size are the reference; the reference again with another
    # seed shows how far the answers move by their own noise
    screenings = {
        f"{size}, {margin:g}": (rounds.Screening(size, margin), 0) for margin in args.margins for size in args.screen
    }
    reference = next(iter(screenings))
    if args.own:
        own = rounds.screening_for(model.manifest)
        screenings[f"the model's own: {own.text()}"] = (own, 0)
    screenings[f"{reference}, seed 1"] = (screenings[reference][0], 1)
    seconds: dict[str, list[float]] = {name: [] for name in screenings}
    results: dict[str, dict] = {}
    for round_ in range(args.rounds):
        for name, (screening, seed) in screenings.items():
            results[name], taken = answers(model, x, k, screening, seed)
            seconds[name].append(taken)
            print(f"round {round_ + 1}, screening {name}: {len(x) / taken:.1f} images/s", flush=True)
    median = {name: float(np.median(s)) for name, s in seconds.items()}
    report = {
        "model_dir": args.model_dir,
        "cpu_count": os.cpu_count(),
        "split": args.split,
        "images": len(x),
        "num_samples": k,
        "rounds": args.rounds,
        "reference": reference,
        "command": shlex.join(["python", "-m", "bench.screening", *(argv if argv is not None else sys.argv[1:])]),
        "screenings": {
            name: {
                "looks": screening.record(),
                "seed": seed,
                **compare(results[reference], results[name], labels),
                "images_per_s": len(x) / median[name],
                "speedup": median[reference] / median[name],
                "seconds": seconds[name],
            }
            for name, (screening, seed) in screenings.items()
        },
    }
    out = args.out or f"bench/results/screening/{model.manifest['version']}/{args.split}"
    save(out, "screening", report, markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
