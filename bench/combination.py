"""The critic's weight in the out-of-distribution combination, chosen without looking at what bench.ood reports:

    python -m bench.combination MODEL_DIR [MODEL_DIR ...] [--digits 2000] [--per-set 500] [--seed 100]

service.ood combines two p-values, the distance's p_d and the critic's p_c, into
-2 [(1 - w) log p_d + w log p_c]. For each model, the first `--digits` validation digits and
`--per-set` images of each design set go through /v1/classify's code in process at the default
settings, binarized by threshold:

- the design sets are bench.ood_sets' sets with letters and glyphs in the design font family
  (DejaVu), drawn from another seed than bench.ood's, with validation digits reversed in polarity
  and reshaped into no digit (training.outliers.reshaped_digits) in place of test digits;
- the validation digits lie in the first half of the calibration's reference, the half that ranks
  the distance and the critic; the second half, which p-values are counted against, is left alone,
  so the false-positive rate holds whatever weight is chosen here.

Each image's distance and critic log-odds from the answer give its statistic at every weight of
WEIGHTS (service.ood.Calibration.statistic), ranked by AUROC against the digits per set. The weight
chosen is the one whose smallest AUROC, over every set of every model, is largest; between equals,
the one nearest equal weight. Prints each model's AUROC at every weight, then the chosen weight's
difference from equal weight per set with its paired-bootstrap standard error (bench.critics).

Writes bench/results/combination.json and COMBINATION.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import numpy as np

from bench.critics import differences, markdown_differences
from bench.ood import auroc, features
from bench.ood_sets import FONT_FAMILIES, ood_sets, reshaped
from bench.report import save
from service.calls import ModelCalls
from service.inference import Inference
from service.ood import EQUAL_WEIGHT, Calibration
from service.runtime import load_model, read_manifest
from service.settings import Settings
from training.data import load_mnist
from training.train import TrainConfig, split_config, split_train_val

RESULTS = Path(__file__).resolve().parent / "results"
WEIGHTS = tuple(round(0.05 * i, 2) for i in range(21))  # 0, 0.05, ..., 1


def design_sets(
    mnist_dir: str, split: TrainConfig, num_digits: int, per_set: int, seed: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The first num_digits validation digits [num_digits, 784] of `split` and the design sets, grey in [0, 1]."""
    data = load_mnist(mnist_dir)
    _, val = split_train_val(data, split)
    digits, labels = data.train_x[val[:num_digits]] / 255.0, data.train_y[val[:num_digits]]
    sets = ood_sets(per_set, seed, FONT_FAMILIES["design"], digits[::-1])
    sets["reshaped"] = reshaped(digits[::-1], labels[::-1], per_set, seed + 15)
    return digits, sets


def checked_inference(model_dir: str, split: TrainConfig, num_digits: int) -> Inference:
    """/v1/classify's code on the calibrated model in `model_dir`, refused unless the model holds out
    `split` and the first num_digits validation digits lie in the first half of its reference (the
    half that takes no part in p-values)."""
    settings = Settings(model_dir=model_dir, batching=False)
    model = load_model(settings)
    if model.ood is None:
        raise SystemExit(f"{model_dir} has no out-of-distribution calibration: run `cvae calibrate {model_dir}`.")
    held_out = split_config(model.manifest)
    if (held_out.seed, held_out.val_size) != (split.seed, split.val_size):
        raise SystemExit(
            f"{model_dir} holds out another validation split (seed {held_out.seed}, {held_out.val_size} images) than "
            f"the first model named (seed {split.seed}, {split.val_size}): compare models of one split at a time."
        )
    half = len(model.ood.reference) // 2
    if num_digits > half:
        raise SystemExit(
            f"--digits {num_digits} reaches into the second half of {model_dir}'s reference, which p-values are "
            f"counted against; choose at most {half}."
        )
    return Inference(model, settings, ModelCalls(model, settings))


def evidence(inference: Inference, digits: np.ndarray, sets: dict[str, np.ndarray]) -> tuple[Calibration, dict]:
    """The model's calibration and the answers' (distance, critic log-odds) of the digits ("digits")
    and of each set's images."""
    found = {}
    for name, images in {"digits": digits, **sets}.items():
        answers = features(inference, images, "threshold")
        found[name] = (answers["distance"], answers["critic"])
    return inference.model.ood, found


def statistics(calibration: Calibration, found: dict, weight: float) -> dict[str, np.ndarray]:
    """The combined statistic (higher = more unusual) of every image of evidence() at the critic's weight."""
    weighed = dataclasses.replace(calibration, critic_weight=weight)
    return {name: weighed.statistic(distance, critic) for name, (distance, critic) in found.items()}


def aurocs(calibration: Calibration, found: dict) -> dict[float, dict[str, float]]:
    """AUROC per weight of WEIGHTS and set, against the digits."""
    table = {}
    for weight in WEIGHTS:
        scores = statistics(calibration, found, weight)
        table[weight] = {name: auroc(scores["digits"], s) for name, s in scores.items() if name != "digits"}
    return table


def smallest(tables: list[dict[float, dict[str, float]]]) -> dict[float, float]:
    """The smallest AUROC over every set of every table, per weight of WEIGHTS."""
    return {w: min(min(table[w].values()) for table in tables) for w in WEIGHTS}


def choose(tables: list[dict[float, dict[str, float]]]) -> float:
    """The weight whose smallest AUROC over every set of every table is largest; between equals (to
    the 4 decimals the table prints), the one nearest EQUAL_WEIGHT."""
    lowest = {w: round(value, 4) for w, value in smallest(tables).items()}
    return max(WEIGHTS, key=lambda w: (lowest[w], -abs(w - EQUAL_WEIGHT)))


def run(model_dirs: list[str], mnist_dir: str, num_digits: int, per_set: int, seed: int, resamples: int) -> dict:
    split = split_config(read_manifest(Path(model_dirs[0])))
    inferences = {model_dir: checked_inference(model_dir, split, num_digits) for model_dir in model_dirs}
    digits, sets = design_sets(mnist_dir, split, num_digits, per_set, seed)
    found = {model_dir: evidence(inference, digits, sets) for model_dir, inference in inferences.items()}
    tables = {model_dir: aurocs(*found[model_dir]) for model_dir in model_dirs}
    chosen = choose(list(tables.values()))
    gains = {}
    for model_dir, (calibration, evidence_found) in found.items():
        scores = {
            label: statistics(calibration, evidence_found, weight)
            for label, weight in ((f"w = {EQUAL_WEIGHT}", EQUAL_WEIGHT), (f"w = {chosen}", chosen))
        }
        gains[model_dir] = differences(scores, resamples)[f"w = {chosen}"] if chosen != EQUAL_WEIGHT else {}
    return {
        "model_dirs": model_dirs,
        "cpu_count": os.cpu_count(),
        "digits": num_digits,
        "per_set": per_set,
        "seed": seed,
        "resamples": resamples,
        "weights": list(WEIGHTS),
        "auroc": {model_dir: {str(w): row for w, row in table.items()} for model_dir, table in tables.items()},
        "smallest": {str(w): value for w, value in smallest(list(tables.values())).items()},
        "chosen": chosen,
        "differences": gains,
    }


def markdown(report: dict) -> str:
    lines = [
        f"The first {report['digits']} validation digits against {report['per_set']} images of each design set "
        f"(seed {report['seed']}; letters and glyphs in DejaVu; reversed and reshaped validation digits), every image "
        "through /v1/classify's code at the default settings (binarize='threshold'). AUROC of the combined statistic "
        "-2 [(1 - w) log p_d + w log p_c] at the critic's weight w:",
        "",
    ]
    for model_dir, table in report["auroc"].items():
        names = list(next(iter(table.values())))
        header = "| w | " + " | ".join(names) + " | smallest |"
        lines += [f"`{model_dir}`:", "", header, "|---" * (len(names) + 2) + "|"]
        for weight, row in table.items():
            cells = " | ".join(f"{row[n]:.4f}" for n in names)
            lines.append(f"| {weight} | {cells} | {min(row.values()):.4f} |")
        lines.append("")
    chosen = report["chosen"]
    best = report["smallest"][str(chosen)]
    equal = report["smallest"][str(EQUAL_WEIGHT)]
    lines.append(
        f"Chosen: w = {chosen}, the smallest AUROC over every set of every model {best:.4f} "
        f"(at equal weight {equal:.4f})."
    )
    for model_dir, gains in report["differences"].items():
        if gains:
            lines += ["", f"`{model_dir}`, paired bootstrap over digits and images ({report['resamples']} draws):", ""]
            lines.append(markdown_differences(f"w = {EQUAL_WEIGHT}", {f"w = {chosen}": gains}, "weight"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dirs", nargs="+", metavar="MODEL_DIR", help="calibrated model directories")
    parser.add_argument("--mnist-dir", default=os.environ.get("MNIST_DIR", "../shared/data/mnist"))
    parser.add_argument("--digits", type=int, default=2000, help="validation digits (default %(default)s)")
    parser.add_argument("--per-set", type=int, default=500, help="images of each set (default %(default)s)")
    parser.add_argument("--seed", type=int, default=100, help="the sets' seed (default %(default)s; bench.ood uses 0)")
    parser.add_argument("--resamples", type=int, default=200, help="paired bootstrap draws (default %(default)s)")
    parser.add_argument("--out", default=str(RESULTS), help="folder for combination.json and COMBINATION.md")
    args = parser.parse_args(argv)
    if args.resamples < 2:
        parser.error("--resamples must be at least 2 (the standard error needs two draws)")
    report = run(args.model_dirs, args.mnist_dir, args.digits, args.per_set, args.seed, args.resamples)
    save(args.out, "combination", report, markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
