"""Refit the proposal q(z|x,y) of a trained model so that its importance weights behave.

The encoder gains a coupling flow (training.model.CouplingFlow, starting as the identity,
so the refit starts from the trained Gaussian q) and is trained with the doubly
reparameterized gradient of the importance-weighted bound (Tucker et al., 2019, "Doubly
Reparameterized Gradient Estimators for Monte Carlo Objectives"): at large k its
gradient for q favours proposals that cover the posterior, which is what keeps the
variance of log p(x) estimates low. The decoder stays as it is unless
`train_decoder` is set, in which case it follows a mix of the ELBO's gradient (which
draws the posterior towards what q can represent) and the IWAE gradient (which
tightens the bound on log p(x|y)). Model selection uses the validation split only.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from training.data import Mnist, load_mnist
from training.model import CVAE, Checkpoint
from training.objectives import dreg_loss, iwae_bound, log_weights
from training.train import TrainConfig, binarize, classify_loss, one_hot, split_train_val


@dataclass
class RefitConfig:
    epochs: int = 10
    batch_size: int = 64
    num_samples: int = 32  # k of the bound whose doubly reparameterized gradient trains q
    learning_rate: float = 3e-4
    final_learning_rate: float = 1e-5
    flow_layers: int = 8
    flow_hidden: int = 256
    train_decoder: bool = False
    elbo_weight: float = 0.5  # with train_decoder: share of the ELBO in p's gradient, the rest IWAE
    classify_weight: float = 0.0  # with train_decoder: the Bayes'-rule cross-entropy of training
    val_images: int = 200
    val_samples: int = 1000
    seed: int = 0
    threads: int = 0
    minutes: float = 0.0  # stop after this many minutes (0: run every epoch)


@torch.no_grad()
def proposal_quality(model: CVAE, x: torch.Tensor, y: torch.Tensor, k: int, seed: int) -> dict:
    """Mean k-sample bound of log p(x|y) and the median effective sample size of the
    importance weights, over images x with their classes y (one-hot)."""
    generator = torch.Generator().manual_seed(seed)
    bounds, ess = [], []
    for start in range(0, len(x), 20):
        log_w, _ = log_weights(model, x[start : start + 20], y[start : start + 20], k, generator)
        w = torch.softmax(log_w.double(), dim=0)
        bounds.append(iwae_bound(log_w.double()))
        ess.append(1.0 / (w**2).sum(0))
    return {"val_bound_log_px_y": torch.cat(bounds).mean().item(), "val_median_ess": torch.cat(ess).median().item()}


def refit(checkpoint: Checkpoint, config: RefitConfig, data: Mnist) -> Checkpoint:
    """Give the checkpoint's model a coupling-flow proposal and train it; return the new checkpoint,
    chosen on the validation bound of log p(x|y) at config.val_samples samples."""
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    base = checkpoint.model_config
    model_config = replace(base, flow_layers=config.flow_layers, flow_hidden=config.flow_hidden)
    model = CVAE(model_config)
    missing, unexpected = model.load_state_dict(checkpoint.state_dict, strict=False)
    if unexpected or any(not name.startswith("flow.") for name in missing):
        raise ValueError(f"checkpoint does not fit the model: missing {missing}, unexpected {unexpected}")
    model.train()
    for p in model.decoder.parameters():
        p.requires_grad_(config.train_decoder)
    trained = TrainConfig(**(checkpoint.extra.get("train_config") or {}))
    train_idx, val_idx = split_train_val(data, replace(trained, train_limit=0))  # the training run's split
    pixels = torch.from_numpy(data.train_x[train_idx])
    labels = torch.from_numpy(data.train_y[train_idx])
    num_classes = model_config.num_classes
    val_x = binarize(torch.from_numpy(data.train_x[val_idx[: config.val_images]]), torch.Generator().manual_seed(2))
    val_y = one_hot(torch.from_numpy(data.train_y[val_idx[: config.val_images]]), num_classes)
    log_prior = torch.tensor(checkpoint.class_prior).log()

    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    steps_per_epoch = math.ceil(len(pixels) / config.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.epochs * steps_per_epoch, eta_min=config.final_learning_rate
    )
    record = {"epoch": 0, **proposal_quality(model.eval(), val_x, val_y, config.val_samples, config.seed)}
    print(f"before refit: {record}", flush=True)
    best, best_state, history = record, copy.deepcopy(model.state_dict()), [record]
    started = time.time()
    for epoch in range(1, config.epochs + 1):
        model.train()
        epoch_start, total = time.time(), 0.0
        order = torch.randperm(len(pixels), generator=generator)
        bar = tqdm(range(steps_per_epoch), desc=f"refit {epoch}", leave=False, mininterval=5, file=sys.stderr)
        for step in bar:
            batch = order[step * config.batch_size : (step + 1) * config.batch_size]
            x = binarize(pixels[batch], generator)
            elbo_weight = config.elbo_weight if config.train_decoder else 0.0
            loss, bound = dreg_loss(model, x, one_hot(labels[batch], num_classes), config.num_samples, elbo_weight)
            if config.train_decoder and config.classify_weight:
                loss = loss + config.classify_weight * classify_loss(model, x, labels[batch], log_prior)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += bound.mean().item() * len(batch)
            if config.minutes and time.time() - started > 60 * config.minutes:
                break
        record = {"epoch": epoch, "train_bound": total / len(pixels)}
        record |= proposal_quality(model.eval(), val_x, val_y, config.val_samples, config.seed)
        record["seconds"] = time.time() - epoch_start
        history.append(record)
        print(
            f"refit {epoch:3d}  train bound k={config.num_samples} {record['train_bound']:8.3f}  "
            f"val bound log p(x|y) K={config.val_samples} {record['val_bound_log_px_y']:8.3f}  "
            f"median ESS {record['val_median_ess']:7.1f}  {record['seconds']:.1f}s",
            flush=True,
        )
        if record["val_bound_log_px_y"] > best["val_bound_log_px_y"]:
            best, best_state = record, copy.deepcopy(model.state_dict())
        if config.minutes and time.time() - started > 60 * config.minutes:
            break
    extra = dict(checkpoint.extra)
    extra["refit"] = {
        "config": asdict(config),
        "seconds": time.time() - started,
        "best_epoch": best["epoch"],
        "validation": best,
        "history": history,
    }
    return Checkpoint(model_config, best_state, checkpoint.class_prior, extra)


def run(checkpoint_path: str | Path, config: RefitConfig, data_dir: str | Path, out: str | Path) -> Path:
    """Load the checkpoint and MNIST, refit the proposal, save the new checkpoint to `out`."""
    checkpoint = refit(Checkpoint.load(checkpoint_path), config, load_mnist(data_dir))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.save(out)
    print(f"saved {out} (best epoch {checkpoint.extra['refit']['best_epoch']})", flush=True)
    return out
