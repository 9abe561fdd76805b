"""Training: the importance-weighted bound on log p(x|y), dynamic binarization,
a validation split for model selection. The test set is never touched here."""

from __future__ import annotations

import hashlib
import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from training.configs import ModelConfig, TrainConfig
from training.data import Mnist, file_checksums, load_mnist
from training.datasets import DataError, dataset_name, name_of, read_images
from training.model import CVAE, Checkpoint
from training.objectives import (
    bayes_posterior,
    class_log_joint,
    dreg_loss,
    iwae_bound,
    log_px_z,
    log_standard_normal,
    log_weights,
    sample_q,
)


def binarize(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Dynamic binarization: x ~ Bernoulli(pixel / 255), drawn anew each call."""
    return torch.bernoulli(pixels.float() / 255.0, generator=generator)


def model_input(pixels: torch.Tensor, likelihood: str, generator: torch.Generator) -> torch.Tensor:
    """What the likelihood scores, from pixels 0-255: binary draws for the Bernoulli (binarize), the grey
    levels as stored, pixel / 255, for the others."""
    return binarize(pixels, generator) if likelihood == "bernoulli" else pixels.float() / 255.0


def named_classes(found: tuple[str, ...], given: list[str] | None) -> list[str]:
    """The class names a model is exported with: `given` (--class-names) in label order, else those the data holds."""
    if given is None:
        return list(found)
    if len(given) != len(found) or len(set(given)) != len(given) or not all(given):
        raise DataError(
            f"--class-names gives {len(given)} names ({', '.join(given)}) for {len(found)} classes: give one distinct, "
            "non-empty name a class, comma-separated, in label order."
        )
    return given


def data_digest(data: Mnist) -> str:
    """sha256 of the training images and labels: what a resumed run must be trained on."""
    digest = hashlib.sha256(np.ascontiguousarray(data.train_x).tobytes())
    digest.update(np.ascontiguousarray(data.train_y).tobytes())
    return digest.hexdigest()


def one_hot(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.one_hot(y, num_classes).float()


def split_config(manifest: dict) -> TrainConfig:
    """A TrainConfig with the seed and validation size the model was trained with, as its manifest records them."""
    config = (manifest.get("training") or {}).get("config") or {}
    return TrainConfig(**{key: config[key] for key in ("seed", "val_size") if key in config})


def class_frequencies(data: Mnist, num_classes: int) -> list[float]:
    """p(y): the class frequencies of all training labels."""
    counts = np.bincount(data.train_y, minlength=num_classes)
    return (counts / counts.sum()).tolist()


def split_train_val(data: Mnist, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and validation images, fixed by the seed. A short run (train_limit) keeps the
    first train_limit training images and validates on the first images of the validation split in the same
    share as a full run (5,000 against 55,000: one for every 11), at least one."""
    order = np.random.default_rng(config.seed).permutation(len(data.train_y))
    val, train = order[: config.val_size], order[config.val_size :]
    if config.train_limit and config.train_limit < len(train):
        val = val[: max(1, math.ceil(config.train_limit * len(val) / len(train)))]
        train = train[: config.train_limit]
    return train, val


def classify_loss(model: CVAE, x: torch.Tensor, y: torch.Tensor, log_prior: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of Bayes' rule over single-sample ELBOs of every class.

    The encoder is held fixed (no gradient) so the term can lower p(x|y') for
    wrong classes only through the decoder, never by spoiling q(z|x,y').
    """
    num_classes = model.config.num_classes
    batch = x.shape[0]
    eye = torch.eye(num_classes, device=x.device)
    y_all = eye[:, None, :].expand(num_classes, batch, num_classes)  # [C, B, C]
    with torch.no_grad():
        rows_x = x.repeat(num_classes, 1)  # [C*B, 784]: class-major
        z, log_qz, _ = sample_q(model, rows_x, y_all.reshape(-1, num_classes), 1)  # [1, C*B, D], [1, C*B]
        z, log_qz = z.view(num_classes, batch, -1), log_qz.view(num_classes, batch)
    logits = model.decode(z, y_all)  # [C, B, 784]
    elbo = log_px_z(logits, x, model.config) + log_standard_normal(z) - log_qz  # [C, B]
    return F.cross_entropy(class_log_joint(elbo.T, log_prior), y)


def step_loss(
    model: CVAE, x: torch.Tensor, labels: torch.Tensor, config: TrainConfig, log_prior: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One training step's loss on binary images x with their labels, and the batch's mean k-sample bound."""
    y = one_hot(labels, model.config.num_classes)
    if config.objective == "dreg":
        loss, bound = dreg_loss(model, x, y, config.num_samples, config.elbo_weight)
        bound = bound.mean()
    else:
        bound = iwae_bound(log_weights(model, x, y, config.num_samples)[0]).mean()
        loss = -bound
    if config.classify_weight:
        loss = loss + config.classify_weight * classify_loss(model, x, labels, log_prior)
    return loss, bound


@torch.no_grad()
def validate(model: CVAE, x: torch.Tensor, y: torch.Tensor, log_prior: torch.Tensor, k: int) -> dict:
    """k-sample bound of log p(x|y_true), of log p(x), and Bayes'-rule accuracy."""
    model.eval()
    num_classes = model.config.num_classes
    generator = torch.Generator(device=x.device).manual_seed(1)
    bounds = []
    for start in range(0, len(x), 500):
        xb = x[start : start + 500]
        per_class = []
        for c in range(num_classes):
            y_c = one_hot(torch.full((len(xb),), c, device=xb.device), num_classes)
            per_class.append(iwae_bound(log_weights(model, xb, y_c, k, generator)[0]))
        bounds.append(torch.stack(per_class, dim=-1))  # [B, C]
    log_px_y = torch.cat(bounds)
    log_px, log_py_x = bayes_posterior(class_log_joint(log_px_y, log_prior))
    model.train()
    return {
        "val_bound_log_px_y": log_px_y.gather(1, y[:, None]).mean().item(),
        "val_bound_log_px": log_px.mean().item(),
        "val_accuracy": (log_py_x.argmax(-1) == y).float().mean().item(),
    }


def train(
    model_config: ModelConfig,
    config: TrainConfig,
    data: Mnist,
    data_dir: str | Path | None = None,
    progress: Path | None = None,
) -> Checkpoint:
    """Train a CVAE and return the checkpoint chosen on the validation bound of log p(x). With `progress`, the
    run's state is saved there after every epoch and a run with the same configuration resumes from it."""
    if config.threads:
        torch.set_num_threads(config.threads)
    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    train_idx, val_idx = split_train_val(data, config)
    pixels = torch.from_numpy(data.train_x[train_idx]).to(device)  # uint8 [N, 784]
    labels = torch.from_numpy(data.train_y[train_idx]).to(device)
    val_pixels = torch.from_numpy(data.train_x[val_idx]).to(device)
    val_x = model_input(val_pixels, model_config.likelihood, torch.Generator(device=device).manual_seed(2))
    val_y = torch.from_numpy(data.train_y[val_idx]).to(device)

    class_prior = class_frequencies(data, model_config.num_classes)
    log_prior = torch.tensor(class_prior, device=device).log()

    model = CVAE(model_config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    steps_per_epoch = math.ceil(len(pixels) / config.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.epochs * steps_per_epoch, eta_min=config.final_learning_rate
    )
    best, best_state, history = None, None, []
    started = time.time()
    run = {"model_config": asdict(model_config), "train_config": asdict(config), "data": data_digest(data)}
    parts = {"model": model, "optimizer": optimizer, "schedule": schedule}
    if progress is not None and progress.exists():
        saved = torch.load(progress, map_location=device, weights_only=False)
        if saved["run"] != run:
            raise DataError(
                f"{progress} holds a run of another configuration or data: delete it to start afresh, or give "
                "--out another path."
            )
        for key, part in parts.items():
            part.load_state_dict(saved[key])
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["rng"])
        best, best_state, history = saved["best"], saved["best_state"], saved["history"]
        started -= saved["seconds"]
        print(f"resuming {progress} after epoch {len(history)}", flush=True)
    for epoch in range(len(history) + 1, config.epochs + 1):
        epoch_start = time.time()
        order = torch.randperm(len(pixels), generator=generator, device=device)
        total = 0.0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}", leave=False, mininterval=5, file=sys.stderr)
        for step in bar:
            batch = order[step * config.batch_size : (step + 1) * config.batch_size]
            x = model_input(pixels[batch], model_config.likelihood, generator)
            loss, bound = step_loss(model, x, labels[batch], config, log_prior)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += bound.item() * len(batch)
        record = {"epoch": epoch, "train_bound": total / len(pixels)}
        record |= validate(model, val_x, val_y, log_prior, config.num_samples)
        record["seconds"] = time.time() - epoch_start
        history.append(record)
        print(
            f"epoch {epoch:3d}  train bound {record['train_bound']:8.3f}  "
            f"val bound log p(x|y) {record['val_bound_log_px_y']:8.3f}  "
            f"log p(x) {record['val_bound_log_px']:8.3f}  "
            f"val acc {record['val_accuracy']:.4f}  {record['seconds']:.1f}s",
            flush=True,
        )
        if best is None or record["val_bound_log_px"] > best["val_bound_log_px"]:
            best = record
            best_state = {name: value.detach().to("cpu", copy=True) for name, value in model.state_dict().items()}
        if progress is not None:
            state = {key: part.state_dict() for key, part in parts.items()} | {
                "run": run,
                "generator": generator.get_state(),
                "rng": torch.get_rng_state(),
                "best": best,
                "best_state": best_state,
                "history": history,
                "seconds": time.time() - started,
            }
            torch.save(state, progress.with_name(progress.name + ".tmp"))
            progress.with_name(progress.name + ".tmp").replace(progress)  # a kill mid-save keeps the last epoch
    extra = {
        "train_config": asdict(config),
        "training_seconds": time.time() - started,
        "best_epoch": best["epoch"],
        "validation": best,
        "history": history,
        "num_train_images": len(train_idx),
        "num_val_images": len(val_idx),
    }
    if data_dir is not None:
        extra["data_sha256"] = file_checksums(data_dir)
    return Checkpoint(model_config, best_state, class_prior, extra)


def run(
    model_config: ModelConfig,
    config: TrainConfig,
    data_dir: str | Path | None,
    out: str | Path,
    data=None,
    name: str | None = None,
    class_names: list[str] | None = None,
) -> Path:
    """Load MNIST from `data_dir`, or the labelled images at `data` (training.datasets: the model takes their
    size and classes; `name` and `class_names` replace the ones the data gives), train, and save the checkpoint
    to `out`. The run's state after each epoch is kept beside it (OUT.progress) until the checkpoint is saved: a
    run stopped midway resumes from it when given the same command."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists: give --out another path, or delete it to train again.")
    out.parent.mkdir(parents=True, exist_ok=True)
    progress = out.with_name(out.name + ".progress")
    if data is None:
        checkpoint = train(model_config, config, load_mnist(data_dir), data_dir, progress)
    else:
        images = read_images(data)
        names = named_classes(images.class_names, class_names)
        model_config = replace(model_config, image_shape=images.shape, num_classes=len(names))
        no_test = images.x[:0], images.y[:0]  # a set of one's own has no test split: it is validated on its own
        checkpoint = train(model_config, config, Mnist(images.x, images.y, *no_test), progress=progress)
        checkpoint.extra["dataset"] = {
            "source": images.source,
            "name": name_of(name) if name else dataset_name(data),
            "class_names": names,
        }
    checkpoint.save(out)
    progress.unlink(missing_ok=True)
    print(f"saved {out} (best epoch {checkpoint.extra['best_epoch']})", flush=True)
    return out
