"""Training recipes side by side: what each gives on validation digits, and what it costs.

Each recipe is the shipped model's own (its manifest's model and training settings) with a
few settings changed. Every recipe is trained from scratch on the training split, chosen
on its validation bound as `cvae train` does, and then scored on validation digits (the
training run's held-out split; the test set is never read):

- log p(x) and Bayes'-rule accuracy from K samples for every class, on `--images` digits;
- for the true class, on `--spread-images` digits under `--seeds` seeds: the seed-to-seed
  standard deviation of log p(x|y) (median and 95th percentile over images), the median
  effective sample size of the importance weights, and the mean estimate.

    python -m bench.recipes --device cuda --out runs/recipes            # train and score every recipe
    python -m bench.recipes --cpu-steps 30 --out runs/recipes           # minutes each would train on this CPU

Recipes train in parallel processes (`--parallel`) on one device. `--cpu-steps` times that
many training steps and one validation pass of each recipe on this machine's CPU (threads
`--threads`) and scales them to the recipe's epochs. Writes OUT/NAME/checkpoint.pt and
OUT/NAME/result.json per recipe, OUT/cpu.json, and OUT/RECIPES.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from service import estimator
from training.data import load_mnist
from training.export import read_manifest
from training.model import CVAE, Checkpoint, ModelConfig
from training.objectives import log_weights
from training.train import (
    TrainConfig,
    binarize,
    class_frequencies,
    one_hot,
    split_train_val,
    step_loss,
    train,
    validate,
)

BASE = "models/mnist-cvae/2.0.0"

# name -> (what it tries, model settings changed, training settings changed)
RECIPES: dict[str, tuple[str, dict, dict]] = {
    "shipped": ("the shipped model's recipe", {}, {}),
    "elbo-1": ("the decoder trained on the ELBO alone (q still on the k-sample bound)", {}, {"elbo_weight": 1.0}),
    "elbo-0.8": ("the decoder's gradient 0.8 ELBO, 0.2 bound", {}, {"elbo_weight": 0.8}),
    "elbo-0": ("the decoder trained on the k-sample bound alone", {}, {"elbo_weight": 0.0}),
    "flow-8": ("8 coupling layers in q", {"flow_layers": 8}, {}),
    "k-10": ("k = 10 samples in the bound", {}, {"num_samples": 10}),
    "latent-16": ("16 latent dimensions", {"latent_dim": 16}, {}),
    "wide": ("hidden layers of 1024", {"hidden_dims": (1024, 1024)}, {}),
    "k-10-flow-8": ("k = 10 and 8 coupling layers in q", {"flow_layers": 8}, {"num_samples": 10}),
}


def recipe_configs(
    name: str, base: str | Path, epochs: int = 0, device: str = "cpu", train_limit: int = 0
) -> tuple[ModelConfig, TrainConfig]:
    """The model and training settings of recipe `name`: the base model's, with the recipe's changes."""
    manifest = read_manifest(Path(base))
    _, model_changes, train_changes = RECIPES[name]
    model_config = replace(ModelConfig.from_dict(manifest["model_config"]), **model_changes)
    train_config = TrainConfig(**manifest["training"]["config"])
    train_config = replace(train_config, **train_changes, device=device, threads=0, train_limit=train_limit)
    if epochs:
        train_config = replace(train_config, epochs=epochs)
    return model_config, train_config


@torch.no_grad()
def assess(
    model: CVAE,
    x: torch.Tensor,
    y: torch.Tensor,
    log_prior: torch.Tensor,
    *,
    num_samples: int,
    spread_images: int,
    seeds: int,
    chunk: int,
) -> dict:
    """Importance-sampling figures on digits x [N, 784] with labels y [N] (see the module's text)."""
    model.eval()
    num_classes = model.config.num_classes
    device = x.device

    def log_w(xs: torch.Tensor, classes: torch.Tensor, seed: int) -> np.ndarray:
        """Importance log-weights [K, N] of digits xs with their classes, drawn from one seed."""
        generator = torch.Generator(device=device).manual_seed(seed)
        parts = []
        for i in range(0, len(xs), chunk):
            y_i = one_hot(classes[i : i + chunk], num_classes)
            parts.append(log_weights(model, xs[i : i + chunk], y_i, num_samples, generator)[0])
        return torch.cat(parts, dim=1).double().cpu().numpy()

    per_class = np.stack(
        [estimator.log_mean_exp(log_w(x, torch.full_like(y, c), 1000 + c)) for c in range(num_classes)], axis=-1
    )  # [N, C]
    joint = per_class + log_prior.double().cpu().numpy()
    log_px = estimator.logsumexp(joint)
    xs, ys = x[:spread_images], y[:spread_images]
    runs = [estimator.reduce_log_weights(log_w(xs, ys, 2000 + seed)) for seed in range(seeds)]
    true_class = np.stack([value for value, *_ in runs])  # [S, M]
    spread = true_class.std(axis=0, ddof=1)
    return {
        "images": len(x),
        "num_samples": num_samples,
        "log_px": float(log_px.mean()),
        "accuracy": float((joint.argmax(-1) == y.cpu().numpy()).mean()),
        "spread_images": len(xs),
        "seeds": seeds,
        "spread_median": float(np.median(spread)),
        "spread_p95": float(np.percentile(spread, 95)),
        "median_ess": float(np.median(runs[0][2])),
        "log_px_y_true": float(true_class.mean()),
    }


def validation_digits(data, train_config: TrainConfig, images: int, device: torch.device):
    """The first `images` validation digits of the split, binarized once (torch seed 3), and their labels."""
    _, val_idx = split_train_val(data, train_config)
    val_idx = val_idx[:images]
    pixels = torch.from_numpy(data.train_x[val_idx]).to(device)
    x = binarize(pixels, torch.Generator(device=device).manual_seed(3))
    return x, torch.from_numpy(data.train_y[val_idx]).long().to(device)


def run_recipe(name: str, args: argparse.Namespace) -> dict:
    """Train recipe `name` on args.device, save its checkpoint and score it; returns the result."""
    model_config, train_config = recipe_configs(name, args.base, args.epochs, args.device, args.train_limit)
    torch.set_num_threads(args.threads)
    data = load_mnist(args.data_dir)
    if args.trained:  # a checkpoint this recipe already trained: score it as it is
        checkpoint = Checkpoint.load(args.trained)
        model_config = checkpoint.model_config
        train_config = TrainConfig(**checkpoint.extra["train_config"])
        minutes, where = checkpoint.extra["training_seconds"] / 60, "recorded in the checkpoint"
    else:
        started = time.time()
        checkpoint = train(model_config, train_config, data)
        minutes = (time.time() - started) / 60
        where = torch.cuda.get_device_name(args.device) if torch.device(args.device).type == "cuda" else "cpu"
    folder = Path(args.out) / name
    folder.mkdir(parents=True, exist_ok=True)
    if not args.trained:
        checkpoint.save(folder / "checkpoint.pt")
    device = torch.device(args.device)
    model = checkpoint.build_model().to(device)
    x, y = validation_digits(data, train_config, args.images, device)
    log_prior = torch.tensor(checkpoint.class_prior, device=device).log()
    figures = assess(
        model,
        x,
        y,
        log_prior,
        num_samples=args.num_samples,
        spread_images=args.spread_images,
        seeds=args.seeds,
        chunk=args.chunk,
    )
    result = {
        "recipe": name,
        "what": RECIPES[name][0],
        "model_config": model_config.to_dict(),
        "train_config": asdict(train_config),
        "device": where,
        "train_minutes": minutes,
        "best_epoch": checkpoint.extra["best_epoch"],
        "validation": checkpoint.extra["validation"],
        "history": checkpoint.extra["history"],
        "assessment": figures,
    }
    (folder / "result.json").write_text(json.dumps(result, indent=1))
    return result


def cpu_minutes(name: str, args: argparse.Namespace, data) -> dict:
    """Minutes recipe `name` would train on this CPU: `args.cpu_steps` timed steps and one
    validation pass, scaled to its epochs."""
    torch.set_num_threads(args.threads)
    model_config, train_config = recipe_configs(name, args.base, args.epochs)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    train_idx, val_idx = split_train_val(data, train_config)
    model = CVAE(model_config)
    optimizer = torch.optim.Adam(model.parameters(), lr=train_config.learning_rate)
    log_prior = torch.tensor(class_frequencies(data, model_config.num_classes)).log()
    pixels, labels = torch.from_numpy(data.train_x[train_idx]), torch.from_numpy(data.train_y[train_idx]).long()
    batch = train_config.batch_size

    def step(index: int) -> None:
        rows = torch.arange(index * batch, (index + 1) * batch) % len(pixels)
        loss, _ = step_loss(model, binarize(pixels[rows], generator), labels[rows], train_config, log_prior)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step(0)  # warm-up
    started = time.perf_counter()
    for index in range(1, args.cpu_steps + 1):
        step(index)
    seconds_per_step = (time.perf_counter() - started) / args.cpu_steps
    val_x = binarize(torch.from_numpy(data.train_x[val_idx]), torch.Generator().manual_seed(2))
    started = time.perf_counter()
    validate(model, val_x, torch.from_numpy(data.train_y[val_idx]).long(), log_prior, train_config.num_samples)
    validation_seconds = time.perf_counter() - started
    steps_per_epoch = math.ceil(len(train_idx) / batch)
    epoch_seconds = steps_per_epoch * seconds_per_step + validation_seconds
    return {
        "seconds_per_step": seconds_per_step,
        "validation_seconds": validation_seconds,
        "epoch_seconds": epoch_seconds,
        "epochs": train_config.epochs,
        "minutes": epoch_seconds * train_config.epochs / 60,
        "threads": torch.get_num_threads(),
    }


EPOCH_LINE = re.compile(
    r"epoch +(?P<epoch>\d+) +train bound +(?P<train_bound>\S+) +val bound log p\(x\|y\) +(?P<val_bound_log_px_y>\S+) "
    r"+log p\(x\) +(?P<val_bound_log_px>\S+) +val acc +(?P<val_accuracy>\S+) +(?P<seconds>[\d.]+)s"
)


def history_from_log(log: Path) -> list[dict]:
    """The per-epoch records a recipe's training printed to its log (all there is of a recipe
    stopped before its end)."""
    text = log.read_text() if log.exists() else ""
    return [
        {key: int(value) if key == "epoch" else float(value) for key, value in match.groupdict().items()}
        for match in EPOCH_LINE.finditer(text)
    ]


def markdown(results: dict, cpu: dict, command: str, base_history: list[dict]) -> str:
    base_at = {record["epoch"]: record["val_bound_log_px"] for record in base_history}
    lines = [
        "# Training recipes side by side",
        "",
        f"`{command}`: each recipe is trained from scratch as `cvae train` trains, on one device, "
        "and scored on validation digits (never the test set). Validation bound: the bound on log p(x) with "
        "the recipe's own k (so a larger k reads higher by itself) at the last epoch reached, beside the base "
        "model's at the same epoch (from its checkpoint's history). log p(x) and accuracy from K samples for "
        "every class; the spread is the seed-to-seed standard deviation of log p(x|y_true), over images; "
        "ESS of the true class's weights. CPU minutes: timed steps and one validation pass on this "
        "machine's CPU, scaled to the recipe's epochs (`--cpu-steps`).",
        "",
        "| recipe | what it tries | epochs reached of | validation bound (base at that epoch) "
        "| accuracy, k of training | log p(x), K | accuracy, K | spread median / p95 (nats) | median ESS "
        "| device minutes | CPU minutes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in RECIPES:
        minutes = f"{cpu[name]['minutes']:.0f}" if name in cpu else "–"
        if name not in results:
            if name in cpu:
                lines.append(f"| {name} | {RECIPES[name][0]} | not trained here | | | | | | | | {minutes} |")
            continue
        result = results[name]
        last = result["history"][-1] if result["history"] else None
        if last is None:
            lines.append(f"| {name} | {result['what']} | not trained | | | | | | | | {minutes} |")
            continue
        base = base_at.get(last["epoch"])
        reached = f"{last['epoch']} of {result['train_config']['epochs']}" + (
            " (stopped)" if result.get("stopped") else ""
        )
        bound = (
            f"{last['val_bound_log_px']:.2f} ({base:.2f})" if base is not None else f"{last['val_bound_log_px']:.2f}"
        )
        a = result.get("assessment")
        scored = (
            f"{a['log_px']:.2f} ({a['images']} digits, K = {a['num_samples']}) | {100 * a['accuracy']:.2f} % "
            f"| {a['spread_median']:.3f} / {a['spread_p95']:.3f} ({a['spread_images']} digits, {a['seeds']} seeds) "
            f"| {a['median_ess']:.1f}"
            if a
            else "stopped before scoring | | |"
        )
        device = f"{result['train_minutes']:.1f} ({result['device']})" if result.get("train_minutes") else "–"
        lines.append(
            f"| {name} | {result['what']} | {reached} | {bound} | {100 * last['val_accuracy']:.2f} % | {scored} "
            f"| {device} | {minutes} |"
        )
    return "\n".join(lines) + "\n"


def gather(out: Path, base: str | Path) -> tuple[dict, dict]:
    """Every recipe's result in `out`: what its worker wrote, or for one stopped before its
    end, its settings and the history its log holds; and the CPU timings, if any."""
    results = {}
    for name in RECIPES:
        path, log = out / name / "result.json", out / f"{name}.log"
        if path.exists():
            results[name] = json.loads(path.read_text())
        elif log.exists():
            model_config, train_config = recipe_configs(name, base)
            results[name] = {
                "recipe": name,
                "what": RECIPES[name][0],
                "model_config": model_config.to_dict(),
                "train_config": asdict(train_config),
                "history": history_from_log(log),
                "stopped": True,
            }
    cpu_path = out / "cpu.json"
    return results, json.loads(cpu_path.read_text()) if cpu_path.exists() else {}


def train_in_parallel(args: argparse.Namespace, argv: list[str], out: Path) -> None:
    """Each recipe in a worker process of its own (`--one NAME`), at most args.parallel at once,
    its output in OUT/NAME.log; those still training at the deadline are stopped."""
    forwarded = [a for a in argv if not a.startswith("--recipes") and a not in RECIPES]
    pending, running, failed, stopped = list(args.recipes), [], [], []
    started = time.time()
    while pending or running:
        while pending and len(running) < args.parallel:
            name = pending.pop(0)
            log = open(out / f"{name}.log", "w")
            command = [sys.executable, "-m", "bench.recipes", *forwarded, "--one", name]
            running.append((name, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log))
        time.sleep(2)
        late = bool(args.deadline) and time.time() - started > 60 * args.deadline
        if late:
            pending = []
        for entry in list(running):
            name, process, log = entry
            if late and process.poll() is None:
                process.kill()
                stopped.append(name)
            returncode = process.wait() if late else process.poll()
            if returncode is None:
                continue
            running.remove(entry)
            log.close()
            if returncode and name not in stopped:
                failed.append(name)
            print(f"{name}: exit {returncode}", flush=True)
    if failed or stopped:
        print(f"failed: {failed}, stopped at the deadline: {stopped} (see their logs in {out})", file=sys.stderr)


def command_line(argv: list[str] | None) -> str:
    return "python -m bench.recipes " + " ".join(argv if argv is not None else sys.argv[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("MNIST_DIR"), help="MNIST's folder (default $MNIST_DIR)")
    parser.add_argument("--base", default=BASE, help="model whose recipe the others change (default %(default)s)")
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--epochs", type=int, default=0, help="epochs of every recipe (default: the base's)")
    parser.add_argument("--train-limit", type=int, default=0, help="train on the first N training digits only (0: all)")
    parser.add_argument("--device", default="cpu", help="where to train and score (default %(default)s)")
    parser.add_argument("--parallel", type=int, default=1, help="recipes trained at once (default %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per recipe (default %(default)s)")
    parser.add_argument("--images", type=int, default=2000, help="validation digits scored (default %(default)s)")
    parser.add_argument("--spread-images", type=int, default=500, help="of them, scored per seed (default %(default)s)")
    parser.add_argument("--seeds", type=int, default=3, help="default %(default)s")
    parser.add_argument("--num-samples", type=int, default=1000, help="K (default %(default)s)")
    parser.add_argument(
        "--chunk", type=int, default=100, help="images per model call when scoring (default %(default)s)"
    )
    parser.add_argument(
        "--cpu-steps", type=int, default=0, help="time this many CPU steps per recipe instead of training"
    )
    parser.add_argument(
        "--trained", help="score this checkpoint as the one recipe named by --recipes, without training"
    )
    parser.add_argument("--deadline", type=float, default=0, help="stop recipes still training after this many minutes")
    parser.add_argument("--report", action="store_true", help="only write the report of what OUT holds")
    parser.add_argument("--out", default="runs/recipes", help="default %(default)s")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a worker process: train and score this recipe
    args = parser.parse_args(argv)
    if not args.data_dir:
        parser.error("name MNIST's folder with --data-dir or MNIST_DIR")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.one:
        run_recipe(args.one, args)
        return 0
    if not args.report:  # the report names every run that put results into OUT
        with open(out / "command.txt", "a") as commands:
            commands.write(command_line(argv) + "\n")
    if args.trained:
        if len(args.recipes) != 1:
            parser.error("--trained scores one checkpoint: name its recipe with --recipes NAME")
        run_recipe(args.recipes[0], args)
    elif args.cpu_steps:
        data = load_mnist(args.data_dir)
        cpu = gather(out, args.base)[1]
        for name in args.recipes:
            cpu[name] = cpu_minutes(name, args, data)
            print(f"{name}: {cpu[name]['minutes']:.0f} CPU minutes", flush=True)
        (out / "cpu.json").write_text(json.dumps(cpu, indent=1))
    elif not args.report:
        train_in_parallel(args, argv if argv is not None else sys.argv[1:], out)
    results, cpu = gather(out, args.base)
    commands = (
        (out / "command.txt").read_text().splitlines() if (out / "command.txt").exists() else [command_line(argv)]
    )
    command = "`, then `".join(commands)
    base_history = Checkpoint.load(Path(args.base) / "checkpoint.pt").extra.get("history", [])
    report = markdown(results, cpu, command, base_history)
    (out / "RECIPES.md").write_text(report)
    (out / "recipes.json").write_text(json.dumps({"command": command, "results": results, "cpu": cpu}, indent=1))
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
