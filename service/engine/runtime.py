"""The exported model under ONNX Runtime: loading, integrity checks, provider choice.

Knows nothing of HTTP; sizes come from the manifest, never from literals.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.engine import background, ood
from service.failures import ModelLoadError
from service.settings import Settings

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
GRAPHS = ("encoder", "decoder", "scorer")
OPTIONAL_FILES = ("ood", "ood_critic")  # checked like the graphs when the manifest lists them
CRITIC = "ood_critic"  # the graph of the out-of-distribution assessment's critic
CRITIC_OUTPUTS = ("critic", "digit_log_probs")  # its log-odds; its digits' log-probabilities


def requested_providers(setting: str) -> list[str]:
    """The provider list to ask ONNX Runtime for, from the `providers` setting."""
    available = ort.get_available_providers()
    if setting.strip().lower() == "auto":
        return [p for p in GPU_PROVIDERS if p in available] + ["CPUExecutionProvider"]
    names = [p.strip() for p in setting.split(",") if p.strip()]
    unknown = [p for p in names if p not in ort.get_all_providers()]
    if unknown:
        raise ModelLoadError(
            f"Unknown execution provider(s) {unknown} in CVAE_PROVIDERS; this onnxruntime build offers {available}."
        )
    return names


@dataclass
class Model:
    """The three ONNX graphs of a model directory, its manifest, and its out-of-distribution
    calibration (with the critic's graph among the sessions) when it has one."""

    manifest: dict
    sessions: dict[str, ort.InferenceSession]
    requested: list[str]
    ood: ood.Calibration | None = None
    passes_per_s: float | None = None  # the scorer's rate on this machine, measured by versions.warm_up

    @property
    def latent_dim(self) -> int:
        return self.manifest["latent_dim"]

    @property
    def num_classes(self) -> int:
        return self.manifest["num_classes"]

    @property
    def x_dim(self) -> int:
        rows, cols = self.manifest["image_shape"]
        return rows * cols

    @property
    def likelihood(self) -> str:
        return self.manifest["likelihood"]["type"]

    @property
    def offers_mnist(self) -> bool:
        """Whether a request may ask for preprocess 'mnist': a model of MNIST's digits (a manifest without the
        list, as the first versions wrote it, is one)."""
        return "mnist" in self.manifest.get("preprocess", ["mnist"])

    @property
    def log_prior(self) -> np.ndarray:
        return np.log(np.asarray(self.manifest["class_prior"], dtype=np.float64))

    @property
    def active_providers(self) -> list[str]:
        return self.sessions["decoder"].get_providers()

    def one_hot(self, y: np.ndarray) -> np.ndarray:
        return np.eye(self.num_classes, dtype=np.float32)[y]

    def encode(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x [N, 784], y class indices [N] -> mu, logvar [N, D]."""
        mu, logvar = self.sessions["encoder"].run(None, {"x": x.astype(np.float32), "y": self.one_hot(y)})
        return mu, logvar

    def decode(self, z: np.ndarray, y: np.ndarray) -> np.ndarray:
        """z [N, D], y class indices [N] -> logits [N, 784]."""
        (logits,) = self.sessions["decoder"].run(None, {"z": z.astype(np.float32), "y": self.one_hot(y)})
        return logits

    def critic_answers(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Binary images x [N, 784] -> the critic's log-odds that each is a digit [N] and its
        probabilities of the ten digits [N, 10]; nan and None for a model without a critic."""
        if CRITIC not in self.sessions:  # a model of grey levels is assessed without one (weight 0)
            return np.full(len(x), np.nan), None
        log_odds, digit_log_probs = self.sessions[CRITIC].run(list(CRITIC_OUTPUTS), {"x": x.astype(np.float32)})
        return log_odds.astype(np.float64), np.exp(digit_log_probs.astype(np.float64))

    def log_weights(self, x: np.ndarray, y: np.ndarray, eps: np.ndarray) -> tuple[np.ndarray, ...]:
        """x [N, 784], y [N], eps [K, N, D] -> log_w, log_px_z [K, N] and KL [N]."""
        log_w, lpx_z, kl = self.sessions["scorer"].run(
            None, {"x": x.astype(np.float32), "y": self.one_hot(y), "eps": eps.astype(np.float32)}
        )
        return log_w, lpx_z, kl


HASH_CHUNK_BYTES = 1 << 20  # a file is hashed 1 MiB at a time, never read whole


def sha256(path: Path) -> str:
    """The file's sha256 as hex, read HASH_CHUNK_BYTES at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(model_dir: str | Path) -> dict:
    """The manifest of `model_dir`, once it is JSON holding every key a loader needs (its files are checked by
    verify_files)."""
    path = Path(model_dir) / "manifest.json"
    if not path.is_file():
        raise ModelLoadError(
            f"No manifest.json in {model_dir}: name a model directory made by `cvae export` (the service: "
            "CVAE_MODEL_DIR, or a version folder in CVAE_MODEL_REPOSITORY)."
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ModelLoadError(f"{path} is not valid JSON ({error}).") from error
    missing = [
        key
        for key in ("latent_dim", "num_classes", "image_shape", "class_prior", "files", "likelihood")
        if key not in manifest
    ]
    if missing:
        raise ModelLoadError(f"{path} lacks {missing}: re-export the model with `cvae export`.")
    return manifest


def _check_shapes(name: str, session: ort.InferenceSession, entry: dict) -> None:
    declared = {**entry["inputs"], **entry["outputs"]}
    for arg in [*session.get_inputs(), *session.get_outputs()]:
        want = declared.get(arg.name)
        if want is None:
            raise ModelLoadError(f"{name}.onnx has {arg.name!r}, which the manifest does not list.")
        got = [d if isinstance(d, int) else str(d) for d in arg.shape]
        fixed = [(g, w) for g, w in zip(got, want) if isinstance(w, int) and isinstance(g, int)]
        if len(got) != len(want) or any(g != w for g, w in fixed):
            raise ModelLoadError(f"{name}.onnx {arg.name!r} has shape {got}; the manifest says {want}.")


def listed_file(model_dir: Path, name: str, entry) -> Path:
    """The file the manifest's entry `name` names, resolved; refused unless it lies inside `model_dir`."""
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or "sha256" not in entry:
        raise ModelLoadError(
            f"The manifest in {model_dir} gives files.{name} as {entry!r}, not a file name and its sha256: "
            "re-export the model."
        )
    named = model_dir / entry["file"]
    path = named.resolve()
    if not path.is_relative_to(model_dir.resolve()):
        why = (
            "an absolute path" if Path(entry["file"]).is_absolute()
            else "a symlink that points outside it" if named.is_symlink()
            else "a path that leads outside it"
        )  # fmt: skip
        raise ModelLoadError(
            f"The manifest in {model_dir} names {entry['file']!r} as its {name!r} file, {why}: a manifest names "
            "files inside its own version folder only; copy the file in and re-export the model."
        )
    return path


def verify_files(model_dir: Path, max_file_bytes: int | None = None) -> dict:
    """The manifest of `model_dir`, once every file it lists lies inside it and is at most `max_file_bytes`
    long (all checked before any is read), and then matches its sha256."""
    manifest = read_manifest(model_dir)
    listed = []
    for name in (*GRAPHS, *(n for n in OPTIONAL_FILES if n in manifest["files"])):
        entry = manifest["files"].get(name)
        if entry is None:
            raise ModelLoadError(f"The manifest in {model_dir} lists no {name!r} graph: re-export the model.")
        path = listed_file(model_dir, name, entry)
        if not path.is_file():
            raise ModelLoadError(f"{model_dir / entry['file']} is missing; the manifest lists it.")
        size = path.stat().st_size
        if max_file_bytes is not None and size > max_file_bytes:
            raise ModelLoadError(
                f"{model_dir / entry['file']} is {size} bytes, more than CVAE_MAX_MODEL_FILE_BYTES "
                f"({max_file_bytes}): it was not read; raise the setting if the model is meant to be this large."
            )
        listed.append((path, entry))
    for path, entry in listed:
        if sha256(path) != entry["sha256"]:
            raise ModelLoadError(
                f"{model_dir / entry['file']} does not match the sha256 in the manifest: the file is corrupt or "
                "replaced."
            )
    return manifest


def load_model(settings: Settings) -> Model:
    """Open every graph, after checking files against the manifest's sha256 and shapes."""
    model_dir = Path(settings.model_dir)
    manifest = verify_files(model_dir, settings.max_model_file_bytes)
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # Idle intra-op threads spin by default, taking the cores from the other requests' Python work
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = requested_providers(settings.providers)
    sessions = {}
    for name in (*GRAPHS, *([CRITIC] if CRITIC in manifest["files"] else [])):
        entry = manifest["files"][name]
        path = listed_file(model_dir, name, entry)
        try:
            sessions[name] = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as error:  # onnxruntime raises its own untyped errors
            raise ModelLoadError(f"ONNX Runtime cannot open {model_dir / entry['file']}: {error}") from error
        _check_shapes(name, sessions[name], entry)
    if CRITIC in sessions and not set(CRITIC_OUTPUTS) <= {o.name for o in sessions[CRITIC].get_outputs()}:
        raise ModelLoadError(
            f"{model_dir / manifest['files'][CRITIC]['file']} lacks one of the outputs {list(CRITIC_OUTPUTS)}: "
            f"write it anew with `cvae calibrate {model_dir} --critic-from {model_dir}`."
        )
    model = Model(manifest, sessions, providers, _load_ood(model_dir, manifest))
    inactive = [p for p in providers if p in GPU_PROVIDERS and p not in model.active_providers]
    if settings.strict_providers and inactive:
        raise ModelLoadError(
            f"Requested {inactive} but ONNX Runtime is running on {model.active_providers}; "
            "install onnxruntime-gpu with a matching CUDA, or unset CVAE_STRICT_PROVIDERS."
        )
    return model


def _load_ood(model_dir: Path, manifest: dict) -> ood.Calibration | None:
    """The out-of-distribution calibration the manifest lists (None when it lists none)."""
    entry = manifest["files"].get("ood")
    if entry is None:
        return None
    kind = background.kind_for(manifest["likelihood"]["type"])
    template = background.TEMPLATES[kind]
    if [tuple(offset) for offset in entry.get("template", [])] != list(template):
        raise ModelLoadError(
            f"{model_dir / entry['file']} was made for the context template {entry.get('template')}, not this "
            f"service's {[list(t) for t in template]} for {kind} pixels: recalibrate it with `cvae calibrate`."
        )
    if entry.get("features") != list(ood.FEATURES):
        raise ModelLoadError(
            f"{model_dir / entry['file']} holds the numbers {entry.get('features')}, not the {list(ood.FEATURES)} "
            "this service measures: recalibrate it with `cvae calibrate`."
        )
    if "critic_weight" not in entry:
        raise ModelLoadError(
            f"The manifest in {model_dir} gives no files.ood.critic_weight, the critic's weight in the "
            "out-of-distribution statistic: recalibrate it with `cvae calibrate`."
        )
    weight = entry["critic_weight"]
    try:
        weight = ood.critic_weight_of(weight)
    except ValueError as error:
        raise ModelLoadError(
            f"The manifest in {model_dir} gives files.ood.critic_weight = {weight!r}, but {error}: correct it or "
            "recalibrate with `cvae calibrate --critic-weight`."
        ) from error
    if CRITIC not in manifest["files"] and (weight > 0 or kind == "binary"):
        raise ModelLoadError(
            f"The manifest in {model_dir} lists an out-of-distribution calibration but not its critic graph "
            f"({CRITIC!r}): recalibrate it with `cvae calibrate`."
        )
    try:
        calibration = ood.Calibration.load(listed_file(model_dir, "ood", entry), critic_weight=weight)
    except (ValueError, KeyError, OSError) as error:
        raise ModelLoadError(f"{model_dir / entry['file']} cannot be read: {error}") from error
    if background.kind(calibration.log_probs) != kind:
        raise ModelLoadError(
            f"{model_dir / entry['file']} holds a background model of {background.kind(calibration.log_probs)} "
            f"pixels, but this model scores {kind} ones: recalibrate it with `cvae calibrate`."
        )
    return calibration
