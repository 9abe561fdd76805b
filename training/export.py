"""Export a checkpoint to ONNX graphs plus a manifest that describes them.

Graphs (all with a dynamic batch axis N, and K for the scorer):
- encoder.onnx: x [N, 784], y [N, C] -> mu, logvar [N, D]
- decoder.onnx: z [N, D], y [N, C] -> logits [N, 784]
- scorer.onnx:  x [N, 784], y [N, C], eps [K, N, D] -> log_w, log_px_z [K, N], kl [N]
  (the importance log-weights of training.objectives, with z ~ q(z|x,y) made from the
  standard-normal eps through q's flow when it has one, computed in one run so that no
  [K, N, 784] logits leave ONNX Runtime; kl is the mean of log q(z) - log p(z) over the K)
"""

from __future__ import annotations

import json
import secrets
import shutil
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import onnx
import torch
from torch import nn

from service.engine.runtime import sha256
from training.model import CVAE, Checkpoint
from training.objectives import LEVELS, MIN_LOG_SCALE, log_px_z, log_standard_normal, sample_q

MODEL_NAME = "mnist-cvae"
MANIFEST = "manifest.json"
OPSET = 17


class EncoderGraph(nn.Module):
    def __init__(self, model: CVAE):
        super().__init__()
        self.model = model

    def forward(self, x, y):
        return self.model.encode(x, y)


class DecoderGraph(nn.Module):
    def __init__(self, model: CVAE):
        super().__init__()
        self.model = model

    def forward(self, z, y):
        return self.model.decode(z, y)


class ScorerGraph(nn.Module):
    """log w_k = log p(x|z_k,y) + log p(z_k) - log q(z_k|x,y), z_k = mu + sigma * f(eps_k)."""

    def __init__(self, model: CVAE):
        super().__init__()
        self.model = model

    def forward(self, x, y, eps):
        z, log_q, _ = sample_q(self.model, x, y, eps.shape[0], eps=eps)  # [K, N, D], [K, N]
        logits = self.model.decode(z, y.expand(eps.shape[0], -1, -1))  # [K, N, 784]
        lpx_z = log_px_z(logits, x, self.model.config)  # [K, N]
        log_w = lpx_z + log_standard_normal(z) - log_q
        return log_w, lpx_z, (lpx_z - log_w).mean(0)


def export_graph(module: nn.Module, args: tuple, path: Path, inputs: dict, outputs: list[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=list(inputs),
            output_names=outputs,
            dynamic_axes=inputs | {name: {0: "N"} for name in outputs},
            opset_version=OPSET,
            dynamo=False,
        )
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


class VersionExists(FileExistsError):
    """The model directory to write already holds files."""


def _holds_files(path: Path) -> bool:
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


@contextmanager
def staged(out_dir: str | Path, force: bool = False) -> Iterator[Path]:
    """A hidden sibling folder of `out_dir` (.NAME.partial-XXXXXXXX) to write a model directory into, renamed to
    `out_dir` when the block ends and removed if it raises: a service scanning the parent (which skips hidden
    folders) never sees a half-written version. VersionExists, before anything is written, when `out_dir` holds
    files, unless `force`: then the old folder is replaced once the new one is complete (moved aside, the new
    one renamed in, the old one deleted; a scan between the two renames finds neither)."""
    out = Path(out_dir)
    if _holds_files(out) and not force:
        raise VersionExists(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial-{secrets.token_hex(4)}"
    partial.mkdir()
    try:
        yield partial
        if force and _holds_files(out):
            old = out.parent / f".{out.name}.old-{secrets.token_hex(4)}"
            out.rename(old)
            try:
                partial.rename(out)
            except OSError:
                old.rename(out)
                raise
            shutil.rmtree(old)
        else:
            try:
                partial.rename(out)  # takes the place of an empty folder; refuses one that holds files
            except OSError as error:
                raise VersionExists(out) from error
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # gone once renamed into place


def export(checkpoint: Checkpoint, out_dir: str | Path, version: str = "1.0.0", description: str = "") -> Path:
    """Write encoder.onnx, decoder.onnx, scorer.onnx and manifest.json into `out_dir`; `description`
    says what distinguishes this version from the others (the service lists it)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = checkpoint.build_model()
    config = model.config
    n, k, c, d = 2, 3, config.num_classes, config.latent_dim
    x = torch.rand(n, config.x_dim).round()
    y = torch.eye(c)[:n]
    z = torch.randn(n, d)
    eps = torch.randn(k, n, d)
    with torch.no_grad():
        export_graph(
            EncoderGraph(model), (x, y), out / "encoder.onnx", {"x": {0: "N"}, "y": {0: "N"}}, ["mu", "logvar"]
        )
        export_graph(DecoderGraph(model), (z, y), out / "decoder.onnx", {"z": {0: "N"}, "y": {0: "N"}}, ["logits"])
        export_graph(
            ScorerGraph(model),
            (x, y, eps),
            out / "scorer.onnx",
            {"x": {0: "N"}, "y": {0: "N"}, "eps": {0: "K", 1: "N"}},
            ["log_w", "log_px_z", "kl"],
        )
    _fix_scorer_axes(out / "scorer.onnx")
    manifest = build_manifest(checkpoint, out, version, description)
    write_manifest(out, manifest)
    return out


def _fix_scorer_axes(path: Path) -> None:
    """Name the scorer's output axes [K, N] (dynamic_axes above labels axis 0 only)."""
    graph = onnx.load(str(path))
    for output in graph.graph.output:
        dims = output.type.tensor_type.shape.dim
        labels = ["K", "N"] if output.name in ("log_w", "log_px_z") else ["N"]
        for dim, label in zip(dims, labels):
            dim.dim_param = label
    onnx.save(graph, str(path))


def model_name(checkpoint: Checkpoint) -> str:
    """MODEL_NAME for a model of MNIST; NAME-cvae for one of a set of one's own (training.datasets.dataset_name)."""
    dataset = checkpoint.extra.get("dataset")
    return f"{dataset['name']}-cvae" if dataset else MODEL_NAME


def build_manifest(checkpoint: Checkpoint, out: Path, version: str, description: str = "") -> dict:
    config = checkpoint.model_config
    likelihood = {"type": config.likelihood, "parameters": {"mean": "sigmoid(logits)"}}
    if config.likelihood == "gaussian":
        likelihood["parameters"]["sigma"] = config.gaussian_sigma
    outputs = config.x_dim
    if config.likelihood == "logistic":
        outputs = 2 * config.x_dim
        likelihood["parameters"] |= {
            "levels": LEVELS,
            "scale": "exp(max(log_scale, min_log_scale))",
            "min_log_scale": MIN_LOG_SCALE,
            "decoder_outputs": f"logits: the {config.x_dim} means' logits, then the {config.x_dim} log_scale",
            "bins": "level k/255 takes the logistic's mass on [k/255 - 1/510, k/255 + 1/510], the first and "
            "last bins reaching to -inf and +inf",
        }
    files = {
        "encoder": {
            "file": "encoder.onnx",
            "inputs": {"x": ["N", config.x_dim], "y": ["N", config.num_classes]},
            "outputs": {"mu": ["N", config.latent_dim], "logvar": ["N", config.latent_dim]},
        },
        "decoder": {
            "file": "decoder.onnx",
            "inputs": {"z": ["N", config.latent_dim], "y": ["N", config.num_classes]},
            "outputs": {"logits": ["N", outputs]},
        },
        "scorer": {
            "file": "scorer.onnx",
            "inputs": {"x": ["N", config.x_dim], "y": ["N", config.num_classes], "eps": ["K", "N", config.latent_dim]},
            "outputs": {"log_w": ["K", "N"], "log_px_z": ["K", "N"], "kl": ["N"]},
        },
    }
    for entry in files.values():
        entry["sha256"] = sha256(out / entry["file"])
    extra = checkpoint.extra
    return {
        "name": model_name(checkpoint),
        "version": version,
        "description": description or None,
        "latent_dim": config.latent_dim,
        "num_classes": config.num_classes,
        "class_names": extra.get("dataset", {}).get("class_names") or [str(i) for i in range(config.num_classes)],
        "image_shape": list(config.image_shape),
        "preprocess": [] if extra.get("dataset") else ["mnist"],  # what a request's preprocess may ask for
        "likelihood": likelihood,
        "class_prior": checkpoint.class_prior,
        "files": files,
        "proposal": proposal_description(config),
        "model_config": config.to_dict(),
        "training": {
            "config": extra.get("train_config"),
            "seconds": extra.get("training_seconds"),
            "best_epoch": extra.get("best_epoch"),
            "num_train_images": extra.get("num_train_images"),
            "num_val_images": extra.get("num_val_images"),
            "validation": extra.get("validation"),
        },
        "data_sha256": extra.get("data_sha256"),
        "metrics": {},
    }


def proposal_description(config) -> dict:
    """What q(z|x,y) is, in the scorer graph and the encoder graph."""
    if not config.flow_layers:
        return {
            "type": "gaussian",
            "description": "q(z|x,y) = N(mu, diag exp(logvar)): the encoder graph's outputs; z = mu + sigma * eps.",
        }
    return {
        "type": "coupling_flow",
        "flow_layers": config.flow_layers,
        "flow_hidden": config.flow_hidden,
        "description": "z = mu + sigma * f(eps), eps ~ N(0, I), f a stack of affine coupling layers conditioned on "
        "the encoder's last hidden layer; the encoder graph gives the Gaussian base (mu, logvar) only, the scorer "
        "graph the full q.",
    }


def write_manifest(model_dir: str | Path, manifest: dict) -> None:
    # allow_nan=False: the service returns the manifest as JSON, which has no NaN
    (Path(model_dir) / MANIFEST).write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n")


def command(args, prog: str) -> int:
    """`cvae export`: the model directory written under a hidden name and renamed into place (training.export.staged),
    with the screening and calibration when --data-dir names the data, so that it appears complete or not at all."""
    checkpoint = Checkpoint.load(args.checkpoint)
    out = Path(args.out_dir or f"models/{model_name(checkpoint)}/{args.version}")
    try:
        with staged(out, force=args.force) as partial:
            export(checkpoint, partial, args.version, args.description)
            if args.copy_checkpoint:
                shutil.copyfile(args.checkpoint, partial / "checkpoint.pt")
            if args.data_dir:  # only when asked: both score 5,000 validation images (minutes)
                from training.calibrate import run as calibrate
                from training.data import load_mnist
                from training.screening import run as choose_screening

                choose_screening(partial, load_mnist(args.data_dir))
                calibrate(partial, args.data_dir)
    except VersionExists:
        print(
            f"{prog} export: error: {out} already holds a model version, left as it is: pass --version NEW (or "
            "--out-dir DIR) to export a new one, or --force to replace this one once the new one is complete",
            file=sys.stderr,
        )
        return 2
    print(f"exported {out}")
    return 0
