"""Critics side by side, for choosing how one is trained without looking at what bench.ood reports:

    python -m bench.critics GRAPH [GRAPH ...] [--digits 2000] [--per-set 1000] [--seed 100]

Each GRAPH is an exported critic (`ood_critic.onnx`, x [N, 784] -> critic [N]). Its log-odds alone
rank the first `--digits` validation digits (the split every shipped model holds out: seed 0, 5,000
images; never the test set) against `--per-set` images of each bench.ood_sets set, letters and
glyphs in the design font family (DejaVu) only, drawn from another seed than bench.ood's. The
held-out family and the test digits stay for bench.ood, scored once a critic is chosen.

Images are binarized by threshold at 0.5, as a request is by default. Prints AUROC per set (the
critic alone: bench.ood reports it combined with the distance too), then each later critic's
difference from the first with its standard error: `--resamples` paired bootstrap draws of the
digits and of each set's images, the same draws for both critics, so that a difference can be told
from the luck of the images.
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


def unusualness(graphs: list[str], digits: np.ndarray, sets: dict[str, np.ndarray]) -> dict[str, dict]:
    """Each graph's -log-odds (high = unusual) of the digits ("digits") and of each set's images."""
    return {
        graph: {"digits": -log_odds(graph, digits)} | {name: -log_odds(graph, images) for name, images in sets.items()}
        for graph in graphs
    }


def _auroc(scores: dict, name: str, inliers=slice(None), outliers=slice(None)) -> float:
    return auroc(scores["digits"][inliers], scores[name][outliers])


def aurocs(scores: dict[str, dict]) -> dict[str, dict[str, float]]:
    """AUROC per graph and set from unusualness()'s scores."""
    return {graph: {name: _auroc(s, name) for name in s if name != "digits"} for graph, s in scores.items()}


def differences(scores: dict[str, dict], resamples: int, seed: int = 0) -> dict[str, dict[str, tuple[float, float]]]:
    """(AUROC difference, its paired-bootstrap standard error) per set of every graph after the first,
    against the first, from unusualness()'s scores."""
    first, *others = scores
    rng = np.random.default_rng(seed)
    results = {graph: {} for graph in others}
    for name in scores[first]:
        if name == "digits":
            continue
        n_in, n_out = len(scores[first]["digits"]), len(scores[first][name])
        draws = [(rng.integers(n_in, size=n_in), rng.integers(n_out, size=n_out)) for _ in range(resamples)]
        baseline = np.array([_auroc(scores[first], name, i, o) for i, o in draws])
        for graph in others:
            boot = np.array([_auroc(scores[graph], name, i, o) for i, o in draws]) - baseline
            results[graph][name] = (
                _auroc(scores[graph], name) - _auroc(scores[first], name),
                float(np.std(boot, ddof=1)),
            )
    return results


def markdown(results: dict[str, dict[str, float]]) -> str:
    names = list(next(iter(results.values())))
    lines = ["| critic | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {graph} | " + " | ".join(f"{row[n]:.4f}" for n in names) + " |" for graph, row in results.items()]
    return "\n".join(lines)


def markdown_differences(first: str, results: dict[str, dict[str, tuple[float, float]]], kind: str = "critic") -> str:
    """differences() as a table: one row per critic (or other `kind`), "difference ± standard error" per set."""
    names = list(next(iter(results.values())))
    lines = [f"| {kind} - {first} | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for graph, row in results.items():
        lines.append(f"| {graph} | " + " | ".join(f"{row[n][0]:+.4f} ± {row[n][1]:.4f}" for n in names) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("graphs", nargs="+", help="exported critics (ood_critic.onnx)")
    parser.add_argument("--mnist-dir", default=os.environ.get("MNIST_DIR", "../shared/data/mnist"))
    parser.add_argument("--digits", type=int, default=2000, help="validation digits (default 2000)")
    parser.add_argument("--per-set", type=int, default=1000, help="images of each set (default 1000)")
    parser.add_argument("--seed", type=int, default=100, help="the sets' seed (bench.ood uses 0)")
    parser.add_argument("--resamples", type=int, default=200, help="paired bootstrap draws (default 200)")
    args = parser.parse_args()
    if len(set(args.graphs)) < len(args.graphs):
        parser.error("name each GRAPH once")
    if args.resamples < 2:
        parser.error("--resamples must be at least 2 (the standard error needs two draws)")
    digits = validation_digits(args.mnist_dir, args.digits)
    sets = ood_sets(args.per_set, args.seed, FONT_FAMILIES["design"], digits[::-1])
    scores = unusualness(args.graphs, digits, sets)
    print(markdown(aurocs(scores)))
    if len(args.graphs) > 1:
        print()
        print(markdown_differences(args.graphs[0], differences(scores, args.resamples)))


if __name__ == "__main__":
    main()
