"""The critic: a small convolutional network that tells handwritten digits from everything else.

A model of digits sees a printed "S" or "o" as a fair 5 or 0: its likelihood, posterior and margin
are those of a digit. The critic is trained the other way round (outlier exposure, Hendrycks et al.
2019): eleven classes, the ten digits of the training split and one "not a digit" class made by
training.outliers. Its number for an image is

    critic(x) = log sum_y exp(logit_y(x)) - logit_other(x)     (y over the ten digits)

the log-odds that x is some digit rather than something else. Its second answer is its own
posterior over the ten digits, given that x is one,

    digit_log_probs(x)_y = logit_y(x) - log sum_y' exp(logit_y'(x))

a discriminative second opinion that /v1/classify abstains on when it gives the class chosen by
Bayes' rule too little probability. It is exported as `ood_critic.onnx` (binary images x [N, 784]
-> critic [N], digit_log_probs [N, 10]), its larger weights stored as float16 (halve_weights);
service.engine.ood uses the log-odds as one more number per image.
Inputs are binary, as the service scores them: each batch's digits and outliers are binarized half
by x ~ Bernoulli(pixel) and half by thresholding at 0.5, the service's two ways.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from service.engine.runtime import read_manifest, sha256
from training.configs import CriticConfig
from training.export import export_graph
from training.handwriting import Handwriting
from training.outliers import outliers

CRITIC_FILE = "ood_critic.onnx"
NUM_DIGITS = 10
HALVED_MIN_SIZE = 1024  # weights of at least this many numbers are stored as float16
OUTPUTS = {"critic": ["N"], "digit_log_probs": ["N", NUM_DIGITS]}
WEIGHTS = f"weights of {HALVED_MIN_SIZE} numbers or more stored as float16, computed in float32"


class Critic(nn.Module):
    """x [N, 784] binary -> logits [N, 11]: the ten digits, then "not a digit"."""

    def __init__(self, shape: tuple[int, int] = (28, 28), width: int = 1):
        super().__init__()
        self.shape = shape
        self.width = width
        self.features = nn.Sequential(
            nn.Conv2d(1, 32 * width, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32 * width, 64 * width, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        flat = 64 * width * (shape[0] // 4) * (shape[1] // 4)
        self.head = nn.Sequential(nn.Linear(flat, 128 * width), nn.ReLU(), nn.Linear(128 * width, NUM_DIGITS + 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.view(-1, 1, *self.shape)))  # [N, 1, H, W] -> [N, 11]


class CriticGraph(nn.Module):
    """What is exported: x [N, 784] -> critic [N], the log-odds of "a digit" against "not a digit",
    and digit_log_probs [N, 10], the critic's log-probabilities of the ten digits."""

    def __init__(self, critic: Critic):
        super().__init__()
        self.critic = critic

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.critic(x)  # [N, 11]
        digits = torch.logsumexp(logits[:, :NUM_DIGITS], dim=1)
        return digits - logits[:, NUM_DIGITS], logits[:, :NUM_DIGITS] - digits[:, None]


def _binary(grey: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Half the rows x ~ Bernoulli(grey), the other half grey > 0.5."""
    half = len(grey) // 2
    return torch.cat([torch.bernoulli(grey[:half], generator=generator), (grey[half:] > 0.5).float()])


def resolved_device(name: str) -> str:
    """A torch device name from CriticConfig.device: "auto" is "cuda" when PyTorch sees a GPU, else "cpu"."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def train_critic(
    pixels: np.ndarray,
    labels: np.ndarray,
    config: CriticConfig,
    log=print,
    handwriting: np.ndarray | None = None,
    start: Critic | None = None,
) -> Critic:
    """Train on grey training digits [N, 784] (uint8) of classes `labels` [N] against outliers, on
    config.device; the random draws are made on the CPU either way, so a GPU sees the same batches.
    `handwriting` [M, 784] (uint8, prepared as MNIST's digits): real handwriting that is not a digit,
    config.handwriting_share of the non-digits of every step, the rest made up. `start`: a critic to
    go on training (fine-tuning) instead of a new one. Returns the critic on the CPU."""
    device = torch.device(resolved_device(config.device))
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    if config.train_limit:
        pixels, labels = pixels[: config.train_limit], labels[: config.train_limit]
    digits = torch.from_numpy(pixels).float() / 255.0
    classes = torch.from_numpy(labels).long()
    others = torch.from_numpy(outliers(pixels, labels, config.num_outliers, config.seed)).float()
    real = torch.from_numpy(handwriting).float() / 255.0 if handwriting is not None and len(handwriting) else None
    critic = (start if start is not None else Critic(width=config.width)).train().to(device)
    optimizer = torch.optim.Adam(critic.parameters(), lr=config.learning_rate)
    steps = config.epochs * -(-len(digits) // config.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    other = torch.full((config.batch_size,), NUM_DIGITS)
    for epoch in range(config.epochs):
        order = torch.randperm(len(digits), generator=generator)
        picks = torch.randint(len(others), (len(digits),), generator=generator)
        if real is not None:  # which non-digits are real handwriting, and which
            is_real = torch.rand(len(digits), generator=generator) < config.handwriting_share
            real_picks = torch.randint(len(real), (len(digits),), generator=generator)
        total = 0.0
        for first in range(0, len(digits), config.batch_size):
            index = order[first : first + config.batch_size]
            non_digits = others[picks[index]]
            if real is not None:
                non_digits = torch.where(is_real[index, None], real[real_picks[index]], non_digits)
            x = torch.cat([_binary(digits[index], generator), _binary(non_digits, generator)])
            y = torch.cat([classes[index], other[: len(index)]])
            loss = F.cross_entropy(critic(x.to(device)), y.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(index)
        log(f"critic epoch {epoch + 1}/{config.epochs}: cross-entropy {total / len(digits):.4f}")
    return critic.cpu().eval()


def fit(
    model_dir: Path,
    pixels: np.ndarray,
    labels: np.ndarray,
    config: CriticConfig,
    split: dict,
    handwriting: Handwriting | None = None,
    start: tuple[Path, dict] | None = None,
) -> dict:
    """Train the critic on the training split's digits, write CRITIC_FILE into `model_dir` and return
    its manifest entry; `split` is the seed and validation size that chose the training split.
    `handwriting`: real non-digits to learn from besides the made-up ones (their sources named in the
    entry); `start`: the model directory and manifest entry (reusable) of a critic to fine-tune."""
    started = time.time()
    config = replace(config, device=resolved_device(config.device))  # the manifest says where it trained
    first = read_graph(start[0] / start[1]["file"]) if start is not None else None
    if first is not None:
        config = replace(config, width=first.width)  # the width it has, in the manifest
    real = handwriting.x if handwriting is not None else None
    critic = train_critic(pixels, labels, config, handwriting=real, start=first)
    entry = export(model_dir, critic, len(pixels), config, split, time.time() - started)
    if handwriting is not None:
        entry["training"]["handwriting"] = {
            "images": len(handwriting.x),
            "sources": handwriting.name,
            "share": config.handwriting_share,
        }
    if start is not None:
        entry["training"]["started_from"] = {"model_dir": str(start[0]), "sha256": start[1]["sha256"]}
    return entry


def write_graph(model_dir: Path, critic: Critic) -> dict:
    """Write `critic` as CRITIC_FILE into `model_dir`, its larger weights halved; return the
    manifest entry's description of the file."""
    x_dim = critic.shape[0] * critic.shape[1]
    path = model_dir / CRITIC_FILE
    export_graph(CriticGraph(critic), (torch.zeros(2, x_dim),), path, {"x": {0: "N"}}, list(OUTPUTS))
    halve_weights(path)
    return {
        "file": CRITIC_FILE,
        "sha256": sha256(path),
        "inputs": {"x": ["N", x_dim]},
        "outputs": OUTPUTS,
        "weights": WEIGHTS,
    }


def read_graph(path: Path, shape: tuple[int, int] = (28, 28)) -> Critic:
    """The Critic of images of `shape` whose weights CRITIC_FILE at `path` holds (halved or not),
    its width read from the first layer's channels."""
    weights = {}
    for initializer in onnx.load(str(path)).graph.initializer:
        name = initializer.name.removesuffix("_float16")
        if name.startswith("critic."):
            weights[name.removeprefix("critic.")] = torch.from_numpy(
                numpy_helper.to_array(initializer).astype(np.float32)
            )
    critic = Critic(shape, width=weights["features.0.weight"].shape[0] // 32)
    critic.load_state_dict(weights)
    return critic.eval()


def export(model_dir: Path, critic: Critic, num_digits: int, config: CriticConfig, split: dict, seconds: float) -> dict:
    """Write `critic`, trained on `num_digits` training digits with `config` in `seconds`, as
    CRITIC_FILE into `model_dir`; return its manifest entry."""
    return {
        **write_graph(model_dir, critic),
        "training": {
            "split": split,
            "digits": f"the first {min(num_digits, config.train_limit or num_digits)} of the training split",
            "outliers": "training.outliers: half printed characters (nine typeface families: STIX, Computer Modern, "
            "Roboto, Lato, Source Sans, Source Serif, Fredoka One, Amatic SC, Aileron), half reshaped training digits "
            "(polarity reversed among them)",
            "config": asdict(config),
            "seconds": round(seconds, 1),
        },
    }


def halve_weights(path: Path) -> None:
    """Store the graph's float32 weights of at least HALVED_MIN_SIZE numbers as float16, each cast
    back to float32 where the graph starts: half the file (what every replica carries), the same
    float32 arithmetic, weights rounded to float16's 11 significant bits. Weights already halved
    are left as they are, so halving twice changes nothing."""
    model = onnx.load(str(path))
    graph = model.graph
    weights, casts = [], []
    for weight in graph.initializer:
        if weight.data_type != TensorProto.FLOAT or np.prod(weight.dims) < HALVED_MIN_SIZE:
            weights.append(weight)
            continue
        values = numpy_helper.to_array(weight)
        stored = f"{weight.name}_float16"
        weights.append(numpy_helper.from_array(values.astype(np.float16), stored))
        casts.append(helper.make_node("Cast", [stored], [weight.name], to=TensorProto.FLOAT))
    if not casts:
        return
    nodes = casts + list(graph.node)
    del graph.initializer[:]
    graph.initializer.extend(weights)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def reusable(source: Path, split: dict) -> dict:
    """The manifest entry of the critic of the model directory `source`, once it is known to be
    trained on `split` and intact."""
    entry = read_manifest(source)["files"].get("ood_critic")
    if entry is None:
        raise ValueError(f"{source} has no critic to reuse: calibrate it first, or train one here.")
    if entry["training"].get("split") != split:
        raise ValueError(
            f"the critic of {source} was trained on the split {entry['training'].get('split')}, not this model's "
            f"{split}: its training digits may be this model's validation digits; train one here."
        )
    if sha256(source / entry["file"]) != entry["sha256"]:
        raise ValueError(f"{source / entry['file']} does not match the sha256 in its manifest.")
    return entry


def copy(model_dir: Path, source: Path, entry: dict, shape: tuple[int, int] = (28, 28)) -> dict:
    """Write the critic `entry` of `source`, of images of `shape`, into `model_dir` as this version's
    graph makes it (its weights read back, halved if they were not, both outputs); return its entry
    there."""
    return {**entry, **write_graph(model_dir, read_graph(source / entry["file"], shape))}


def graph_outputs(critic: Critic, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """critic(x) [N] and digit_log_probs(x) [N, 10] of binary images x [N, 784] with the torch
    module (the graph's reference)."""
    with torch.no_grad():
        log_odds, digit_log_probs = CriticGraph(critic)(torch.from_numpy(np.asarray(x, np.float32)))
    return log_odds.numpy(), digit_log_probs.numpy()
