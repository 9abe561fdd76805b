"""One model version and the folders it lives in: how versions are named, ordered, found, loaded and told apart.

A repository is `<repository>/<name>/<version>/`; versions are dot-separated numbers and order by
them (1 < 1.0.1 < 1.2 < 10); folders whose names start with "." are ignored.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np

from service.engine.runtime import load_model, read_manifest
from service.failures import ModelLoadError, NotServed
from service.settings import Settings


def not_found(name: str, version: str | None, known, unserved: dict, model_field: str = "model") -> NotServed:
    """No such model or version among `known` (name, version) pairs; `unserved` says why a version that is
    on disk does not serve (Repository.unserved); the model's field is `model` in a query, `name` in a path."""
    versions = sorted((v for n, v in known if n == name), key=version_key)
    if (name, version) in unserved:
        return NotServed("version", f"Model {name!r} version {version!r} {unserved[name, version]}")
    if not versions:
        names = sorted({n for n, _ in known})
        return NotServed(model_field, f"No model {name!r}; models are {names} (GET /v1/models).")
    return NotServed("version", f"Model {name!r} has no version {version!r}; it has {versions} (GET /v1/models).")


def unserved(held_back: set, keep_versions: int, unloaded: set) -> dict[tuple[str, str], str]:
    """Why each version on disk that serves no request does not: left out by keep_versions, or unloaded."""
    why = {
        key: f"is on disk but not served: CVAE_KEEP_VERSIONS={keep_versions} serves the newest {keep_versions} "
        f"ready version(s) of each model; raise it (0 serves all) or POST /v1/models/{key[0]}/versions/{key[1]}/load."
        for key in held_back
    }
    return why | {key: "was unloaded by request; POST .../load brings it back." for key in unloaded}


def not_ready(entry: Version, field: str, prefix: str) -> NotServed:
    """A version that cannot answer: still loading (503, worth a retry) or failed its checks (404)."""
    if entry.state == "loading":
        return NotServed(field, f"{prefix}version {entry.version!r} is still loading; retry shortly.", loading=True)
    return NotServed(field, f"{prefix}version {entry.version!r} failed its checks: {entry.public_reason}")


def version_key(version: str) -> tuple[int, ...]:
    """Versions order by their dot-separated numbers: 1 < 1.0.1 < 1.2 < 10. ValueError otherwise."""
    parts = version.split(".")
    if not all(part.isascii() and part.isdigit() for part in parts):
        raise ValueError(f"version folder {version!r} is not a number like 2 or 1.0.0")
    return tuple(int(part) for part in parts)


def version_folders(model: Path) -> tuple[list[Path], dict[str, str]]:
    """The version folders of one model's folder, and the other visible folders with why they are not."""
    found, refused = [], {}
    for path in sorted(p for p in model.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            version_key(path.name)
        except ValueError as error:
            refused[f"{model.name}/{path.name}"] = str(error)  # relative: answers name no server paths
            continue
        found.append(path)
    return found, refused


def versions_on_disk(settings: Settings) -> tuple[dict[tuple[str, str], Path], dict[str, str]]:
    """(name, version) -> directory for every version folder of the repository (or CVAE_MODEL_DIR alone), and
    the folders that are not versions, with the reason."""
    if settings.model_dir is not None:
        manifest = read_manifest(Path(settings.model_dir))
        return {(str(manifest.get("name", "model")), str(manifest.get("version", "1"))): Path(settings.model_dir)}, {}
    root = Path(settings.model_repository)
    if not root.is_dir():
        raise ModelLoadError(
            f"The model repository {root} is not a folder: set CVAE_MODEL_REPOSITORY to a folder of "
            "<name>/<version>/ model directories, or CVAE_MODEL_DIR to one model directory."
        )
    found, refused = {}, {}
    for model in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        versions, not_versions = version_folders(model)
        found |= {(model.name, path.name): path for path in versions}
        refused |= not_versions
    return found, refused


def newest(repository: Path, name: str) -> Path:
    """The folder of the newest version of model `name` in `repository` (what a request naming none gets,
    when every version loads)."""
    found, _ = version_folders(repository / name)
    if not found:
        raise ModelLoadError(f"{repository / name} holds no version folder.")
    return max(found, key=lambda p: version_key(p.name))


def fingerprint(path: Path) -> tuple:
    """What changes when any file of a version directory is written, added or removed."""
    try:
        return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file()))
    except OSError:
        return ()


def warm_up(model, chunk_rows: int) -> None:
    """One pass through every graph, so the first client does not pay for it; then the scorer's rate
    on this machine (decoder passes per second, the median of three calls of one chunk), from which
    scoring.work_limit keeps what one request may ask for within the request timeout."""
    y = np.zeros(1, dtype=np.int64)
    model.decode(np.zeros((1, model.latent_dim)), y)
    model.encode(np.zeros((1, model.x_dim)), y)
    x, eps = np.zeros((1, model.x_dim)), np.zeros((chunk_rows, 1, model.latent_dim))
    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        model.log_weights(x, y, eps)
        seconds.append(time.perf_counter() - start)
    model.passes_per_s = chunk_rows / max(float(np.median(seconds)), 1e-9)


def prepare(settings: Settings, key: tuple[str, str], path: Path):
    """Load and check version `key` from its directory, then warm it up (blocking: for a worker thread)."""
    model = load_model(settings.model_copy(update={"model_dir": path}))
    name, version = str(model.manifest.get("name")), str(model.manifest.get("version"))
    if settings.model_dir is None and (name, version) != key:
        raise ModelLoadError(
            f"{path / 'manifest.json'} says {name} {version}, but the folder is {key[0]}/{key[1]}: "
            "rename the folder or re-export with --version."
        )
    warm_up(model, settings.score_chunk_rows)
    return model


class Version:
    """One model version: its state, its answers (once ready), and the requests it is serving."""

    def __init__(self, name: str, version: str, path: Path, prints: tuple):
        self.name, self.version, self.path, self.fingerprint = name, version, path, prints
        self.state = "loading"  # loading -> ready -> unloading -> unloaded, or loading -> failed | unloaded
        self.reason: str | None = None
        self.inference = None  # once loaded: what answers its requests (service.engine.inference.Inference)
        self.in_flight = 0
        self.loaded_at: float | None = None
        self.idle = asyncio.Event()
        self.idle.set()

    @property
    def key(self) -> tuple[str, str]:
        return self.name, self.version

    @property
    def public_reason(self) -> str | None:
        """Why the version failed, naming no server paths."""
        return self.reason and self.reason.replace(str(self.path.parent.parent), "<repository>")

    def describe(self) -> dict:
        manifest = self.inference.model.manifest if self.inference else {}
        return {
            "model": self.name,
            "version": self.version,
            "state": self.state,
            "reason": self.public_reason,
            "in_flight": self.in_flight,
            "loaded_at": self.loaded_at,
            "description": manifest.get("description"),
            "metrics": {k: manifest.get("metrics", {}).get(k) for k in ("nll", "accuracy")} if manifest else None,
        }


def served_version(app) -> str | None:
    """The version that answers requests naming none, None while there is none."""
    repository = getattr(app.state, "repository", None)
    try:
        return repository.resolve().version if repository is not None else None
    except NotServed:
        return None


def is_ready(app) -> bool:
    """Whether the app's repository answers requests that name no model."""
    repository = getattr(app.state, "repository", None)
    return repository is not None and repository.ready
