"""What each proposal q(z|x,y) gives: the record behind the model card's "Proposals tried".

On validation images (the training run's held-out split, never the test set) and their
true class, each proposal estimates log p(x|y) with K samples under several seeds; per
proposal: the seed-to-seed spread of the estimate (median and 95th percentile over images),
the reported standard error over that spread, the median Pareto k-hat and ESS, the mean
estimate (a lower bound in expectation, so higher is closer to the truth), and its cost in
decoder passes and seconds per image.

    python -m bench.proposals --model-dir models/mnist-cvae/1.0.0 --images 100 --seeds 5

Needs the `train` extra (PyTorch) and MNIST_DIR.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from service import estimator
from training.ais import AisConfig, cvae_log_joint, cvae_log_px_y
from training.card import refresh_card
from training.data import load_mnist
from training.export import read_manifest, write_manifest
from training.model import CVAE, Checkpoint
from training.objectives import log_normal, log_weights
from training.train import TrainConfig, binarize, one_hot, split_train_val

Proposal = Callable[[CVAE, torch.Tensor, torch.Tensor, int, torch.Generator], torch.Tensor]  # -> log_w [K, N]


def gaussian_base(scale: float = 1.0, defensive: float = 0.0, wide: float = 2.0) -> Proposal:
    """q's Gaussian base N(mu, (scale sigma)^2), optionally mixed with a `wide`r copy of weight `defensive`."""

    def log_w(model, x, y, k, generator):
        mu, logvar = model.encode(x, y)
        logvar = logvar + 2 * math.log(scale)
        eps = torch.randn((k, *mu.shape), generator=generator)
        if defensive:
            eps = eps * torch.where(torch.rand((k, len(x), 1), generator=generator) < defensive, wide, 1.0)
        z = mu + torch.exp(0.5 * logvar) * eps
        log_q = log_normal(z, mu, logvar)
        if defensive:
            wide_q = log_normal(z, mu, logvar + 2 * math.log(wide))
            log_q = torch.logaddexp(math.log(1 - defensive) + log_q, math.log(defensive) + wide_q)
        return cvae_log_joint(model, x, y)(z) - log_q

    return log_w


def student_t(nu: float) -> Proposal:
    """Independent Student-t margins with q's means and scales: heavier tails than q."""

    def log_w(model, x, y, k, generator):
        mu, logvar = model.encode(x, y)
        scale = torch.exp(0.5 * logvar)
        eps = torch.randn((k, *mu.shape), generator=generator)
        chi2 = 2 * torch._standard_gamma(torch.full((k, *mu.shape), nu / 2), generator=generator)
        t = eps / torch.sqrt(chi2 / nu)
        log_q = torch.distributions.StudentT(nu).log_prob(t).sum(-1) - torch.log(scale).sum(-1)
        return cvae_log_joint(model, x, y)(mu + scale * t) - log_q

    return log_w


def moment_matched(pilot: int) -> Proposal:
    """A full-covariance Gaussian fitted to `pilot` importance-weighted samples of q (costs pilot + K)."""

    def log_w(model, x, y, k, generator):
        mu, logvar = model.encode(x, y)
        z = mu + torch.exp(0.5 * logvar) * torch.randn((pilot, *mu.shape), generator=generator)  # [P, N, D]
        w = torch.softmax(cvae_log_joint(model, x, y)(z) - log_normal(z, mu, logvar), dim=0)  # [P, N]
        mean = (w[..., None] * z).sum(0)  # [N, D]
        centred = z - mean
        cov = torch.einsum("pn,pni,pnj->nij", w, centred, centred) + 1e-4 * torch.eye(z.shape[-1])
        fitted = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
        noise = torch.randn((k, *mu.shape), generator=generator)
        draws = mean + torch.einsum("nij,knj->kni", fitted.scale_tril, noise)
        return cvae_log_joint(model, x, y)(draws) - fitted.log_prob(draws)

    return log_w


def flow(model_with_flow: CVAE) -> Proposal:
    """The model's own q: Gaussian base through its coupling flow."""

    def log_w(model, x, y, k, generator):
        return log_weights(model_with_flow, x, y, k, generator)[0]

    return log_w


def annealed(
    chains: int, temperatures: int, leapfrog_steps: int, start: str = "encoder", model_with_flow=None
) -> Proposal:
    """AIS with HMC moves (training.ais.cvae_log_px_y) from `start`, one of training.ais.STARTS; its
    `chains` stand for the K samples. From "proposal", the chains start from `model_with_flow`'s q."""

    def log_w(model, x, y, k, generator):
        config = AisConfig(num_chains=chains, num_temperatures=temperatures, leapfrog_steps=leapfrog_steps, start=start)
        return cvae_log_px_y(model_with_flow or model, x, y, config, generator).log_w

    return log_w


def ais_cost(chains: int, temperatures: int, leapfrog_steps: int) -> int:
    """Decoder passes: per temperature, leapfrog_steps + 1 gradients (a forward and a backward pass,
    about 3 forward passes each) and one forward pass for the weight."""
    return chains * temperatures * (3 * (leapfrog_steps + 1) + 1)


def measure(model: CVAE, proposal: Proposal, x, y, k: int, seeds: int, batch: int = 25) -> dict:
    """Estimates under every seed, then the spread, calibration and diagnostics over images."""
    estimates, errors, khats, ess = [], [], [], []
    started = time.perf_counter()
    for seed in range(seeds):
        generator = torch.Generator().manual_seed(1000 + seed)
        parts = []
        for start in range(0, len(x), batch):
            with torch.no_grad():
                parts.append(proposal(model, x[start : start + batch], y[start : start + batch], k, generator))
        log_w = torch.cat(parts, dim=1).double().numpy()  # [K, N]
        value, se, effective, khat, _ = estimator.reduce_log_weights(log_w)
        estimates.append(value), errors.append(se), khats.append(khat), ess.append(effective)
    seconds = (time.perf_counter() - started) / (seeds * len(x))
    estimates, errors = np.array(estimates), np.array(errors)
    spread = estimates.std(axis=0, ddof=1)
    khat = float(np.median(khats))
    return {
        "spread_median": float(np.median(spread)),
        "spread_p95": float(np.percentile(spread, 95)),
        "reported_over_spread": float(np.median(errors.mean(0) / spread)),
        "khat_median": khat if math.isfinite(khat) else None,  # None: too few samples to fit (K < 25)
        "ess_median": float(np.median(ess)),
        "mean_estimate": float(estimates.mean()),
        "seconds_per_image": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", default="models/mnist-cvae/1.0.0")
    parser.add_argument("--data-dir", default=os.environ.get("MNIST_DIR"))
    parser.add_argument("--images", type=int, default=100, help="validation images (default %(default)s)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per proposal (default %(default)s)")
    parser.add_argument("--num-samples", type=int, default=1000, help="K (default %(default)s)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--only", nargs="+", help="only the proposals whose names contain one of these")
    parser.add_argument("--out", default="bench/results/proposals.json")
    parser.add_argument(
        "--record", action="store_true", help="also write the table into the model's manifest and MODEL_CARD.md"
    )
    args = parser.parse_args(argv)
    if not args.data_dir:
        parser.error("set MNIST_DIR or pass --data-dir")
    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = Checkpoint.load(Path(args.model_dir) / "checkpoint.pt")
    model = checkpoint.build_model()
    base = CVAE(replace(model.config, flow_layers=0))
    base.load_state_dict({k: v for k, v in checkpoint.state_dict.items() if not k.startswith("flow.")})
    base.eval()
    data = load_mnist(args.data_dir)
    trained = TrainConfig(**(checkpoint.extra.get("train_config") or {}))
    _, val = split_train_val(data, replace(trained, train_limit=0))
    val = val[: args.images]
    x = binarize(torch.from_numpy(data.train_x[val]), torch.Generator().manual_seed(2))
    y = one_hot(torch.from_numpy(data.train_y[val]).long(), model.config.num_classes)
    k = args.num_samples
    trials: list[tuple[str, Proposal, int]] = [
        ("q: Gaussian encoder", gaussian_base(), k),
        ("q with sigma x 1.15", gaussian_base(scale=1.15), k),
        ("defensive mixture 0.8 q + 0.2 q(2 sigma)", gaussian_base(defensive=0.2), k),
        ("Student-t margins (nu = 10), q's mean and scale", student_t(10.0), k),
        (f"full-covariance Gaussian from {k} weighted q samples", moment_matched(k), 2 * k),
        ("AIS from q: 16 chains, 30 temperatures, 2 leapfrog steps", annealed(16, 30, 2), ais_cost(16, 30, 2)),
        ("AIS from q: 16 chains, 100 temperatures, 2 leapfrog steps", annealed(16, 100, 2), ais_cost(16, 100, 2)),
    ]
    if model.flow is not None:
        trials.insert(1, ("q with its coupling flow (the served proposal)", flow(model), k))
        for chains, temperatures, steps in ((16, 10, 1), (64, 5, 1), (16, 30, 1), (64, 20, 1)):
            name = f"AIS from q with its flow: {chains} chains, {temperatures} temperatures, {steps} leapfrog step"
            proposal = annealed(chains, temperatures, steps, "proposal", model)
            trials.append((name, proposal, ais_cost(chains, temperatures, steps)))
    if args.only:
        trials = [trial for trial in trials if any(part in trial[0] for part in args.only)]
    results = []
    for name, proposal, cost in trials:
        row = {"proposal": name, "decoder_passes": cost, **measure(base, proposal, x, y, k, args.seeds)}
        results.append(row)
        print(json.dumps(row), flush=True)
    only = " --only " + " ".join(f'"{part}"' for part in args.only) if args.only else ""
    report = {
        "model_dir": args.model_dir,
        "images": len(val),
        "seeds": args.seeds,
        "num_samples": k,
        "command": f"python -m bench.proposals --model-dir {args.model_dir} --images {args.images} "
        f"--seeds {args.seeds} --num-samples {k}{only}",
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    if args.record:
        manifest = read_manifest(args.model_dir)
        manifest.setdefault("metrics", {})["proposals"] = report
        write_manifest(args.model_dir, manifest)
        refresh_card(Path(args.model_dir), manifest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
