"""Critics side by side, for choosing how one is trained without looking at what bench.ood reports:

    python -m bench.critics GRAPH [GRAPH ...] [--digits 2000] [--per-set 1000] [--seed 100]

Each GRAPH is an exported critic (`ood_critic.onnx`, x [N, 784] -> critic [N]). Its log-odds alone
rank the first `--digits` validation digits (the split every shipped model holds out: seed 0, 5,000
images; never the test set) against `--per-set` images of each bench.ood_sets set, letters and
glyphs in the design font family (DejaVu) only, drawn from another seed than bench.ood's. The
held-out family and the test digits stay for bench.ood, scored once a critic is chosen.

Images are binarized by threshold at 0.5, as a request is by default. Prints AUROC per set (the
critic alone: bench.ood reports it combined with the distance too).
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import onnxruntime as ort

from bench.ood import auroc
from bench.ood_sets import FONT_FAMILIES, ood_sets
from training.data import load_mnist
from training.train import TrainConfig, split_train_val

BATCH = 500


def validation_digits(mnist_dir: str, n: int) -> np.ndarray:
    """The first n validation digits [n, 784], grey in [0, 1], of the split the shipped models hold out."""
    data = load_mnist(mnist_dir)
    _, val = split_train_val(data, TrainConfig())
    return data.train_x[val[:n]] / 255.0


def log_odds(graph: str, grey: np.ndarray) -> np.ndarray:
    """critic [N] of grey images [N, 784], binarized at 0.5."""
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    x = (grey > 0.5).astype(np.float32)
    return np.concatenate([session.run(None, {"x": x[i : i + BATCH]})[0] for i in range(0, len(x), BATCH)])


def compare(graphs: list[str], digits: np.ndarray, sets: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """AUROC of each graph's log-odds (low = unusual) per set, against the digits."""
    results = {}
    for graph in graphs:
        inliers = -log_odds(graph, digits)
        results[graph] = {name: auroc(inliers, -log_odds(graph, images)) for name, images in sets.items()}
    return results


def markdown(results: dict[str, dict[str, float]]) -> str:
    names = list(next(iter(results.values())))
    lines = ["| critic | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {graph} | " + " | ".join(f"{row[n]:.4f}" for n in names) + " |" for graph, row in results.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("graphs", nargs="+", help="exported critics (ood_critic.onnx)")
    parser.add_argument("--mnist-dir", default=os.environ.get("MNIST_DIR", "../shared/data/mnist"))
    parser.add_argument("--digits", type=int, default=2000, help="validation digits (default 2000)")
    parser.add_argument("--per-set", type=int, default=1000, help="images of each set (default 1000)")
    parser.add_argument("--seed", type=int, default=100, help="the sets' seed (bench.ood uses 0)")
    args = parser.parse_args()
    digits = validation_digits(args.mnist_dir, args.digits)
    sets = ood_sets(args.per_set, args.seed, FONT_FAMILIES["design"], digits[::-1])
    print(markdown(compare(args.graphs, digits, sets)))


if __name__ == "__main__":
    main()
