"""What training the critic costs on this machine, extrapolated from a short timed run:

    python -m bench.critic_cost [--digits 2000] [--outliers 2000] [--width 2] [--device cpu]

Times the two parts of `cvae calibrate`'s critic training (training.critic) on small inputs:
drawing made-up non-digits (training.outliers.outliers) and one epoch of train_critic over the
first training digits (each batch as many digits as non-digits, picked from a few drawn for it).
Each is timed at two sizes, N and 2N (`--outliers`, `--digits`), and the difference over N is the
cost of one more, so fixed costs (building the typefaces' alphabets, the network) drop out. Both
grow linearly with their count, so the full training's time is extrapolated from them:
CriticConfig's non-digits drawn once, and its epochs over the training split's 55,000 digits.
Writes bench/results/critic_cost.json and CRITIC_COST.md.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench.report import save
from training.critic import CriticConfig, train_critic
from training.data import load_mnist
from training.outliers import outliers
from training.train import TrainConfig, split_train_val

RESULTS = Path(__file__).resolve().parent / "results"
EPOCH_OUTLIERS = 16  # the timed epochs pair their digits with these few
WARM_UP = 32  # digits and non-digits of the untimed first calls


def _seconds(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def run(mnist_dir: str, num_digits: int, num_outliers: int, width: int, device: str) -> dict:
    data = load_mnist(mnist_dir)
    train, _ = split_train_val(data, TrainConfig())
    pixels, labels = data.train_x[train], data.train_y[train]
    full = replace(CriticConfig(), width=width, device=device)

    def drawing(n: int) -> float:
        return _seconds(lambda: outliers(pixels, labels, n, full.seed, full.written_share))

    def epoch(n: int) -> float:  # the same arithmetic as an epoch of the full training, over n digits
        short = replace(full, epochs=1, num_outliers=EPOCH_OUTLIERS, train_limit=n)
        return _seconds(lambda: train_critic(pixels, labels, short, log=lambda _: None))

    drawing(WARM_UP), epoch(WARM_UP)  # fonts and files read once, the first calls' costs paid
    per_outlier = (drawing(2 * num_outliers) - drawing(num_outliers)) / num_outliers
    per_digit = (epoch(2 * num_digits) - epoch(num_digits)) / num_digits
    drawing_full = per_outlier * full.num_outliers
    training_full = per_digit * len(pixels) * full.epochs
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "width": width,
        "digits_timed": num_digits,
        "outliers_timed": num_outliers,
        "ms_per_outlier_drawn": 1000 * per_outlier,
        "ms_per_digit_epoch": 1000 * per_digit,
        "full": {"outliers": full.num_outliers, "epochs": full.epochs, "digits": len(pixels)},
        "seconds_drawing_full": drawing_full,
        "seconds_per_epoch_full": per_digit * len(pixels),
        "seconds_full": drawing_full + training_full,
    }


def markdown(report: dict) -> str:
    f = report["full"]
    return (
        f"Machine: {report['cpu_count']} CPUs ({report['torch_threads']} torch threads), device "
        f"{report['device']}; critic width {report['width']}. Timed at N and 2N: drawing "
        f"N = {report['outliers_timed']} non-digits ({report['ms_per_outlier_drawn']:.2f} ms each) and one epoch "
        f"over N = {report['digits_timed']} training digits ({report['ms_per_digit_epoch']:.2f} ms each, with as "
        "many non-digits).\n\n"
        f"Extrapolated to the default training ({f['outliers']} non-digits, {f['epochs']} epochs over {f['digits']} "
        f"digits): drawing {report['seconds_drawing_full'] / 60:.1f} min, an epoch "
        f"{report['seconds_per_epoch_full'] / 60:.1f} min, all of it {report['seconds_full'] / 3600:.2f} hours.\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist-dir", default=os.environ.get("MNIST_DIR", "../shared/data/mnist"))
    parser.add_argument(
        "--digits", type=int, default=2000, help="training digits of the timed epoch (default %(default)s)"
    )
    parser.add_argument("--outliers", type=int, default=2000, help="non-digits drawn (default %(default)s)")
    parser.add_argument(
        "--width", type=int, default=CriticConfig.width, help="the critic's width (default %(default)s)"
    )
    parser.add_argument("--device", default="cpu", help="where the epoch trains: cpu or cuda (default %(default)s)")
    parser.add_argument("--out", default=str(RESULTS), help="folder for critic_cost.json (default %(default)s)")
    args = parser.parse_args(argv)
    report = run(args.mnist_dir, args.digits, args.outliers, args.width, args.device)
    save(args.out, "critic_cost", report, markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
