"""Every shipped model version is complete, intact and described by its manifest."""

import hashlib
import json
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent / "models"
VERSIONS = sorted(p for p in REPOSITORY.glob("*/*") if p.is_dir() and not p.name.startswith("."))


@pytest.fixture(params=VERSIONS, ids=[f"{p.parent.name}-{p.name}" for p in VERSIONS])
def shipped_model(request):
    return request.param


def test_the_repository_ships_versions_whose_manifests_name_their_folders():
    assert VERSIONS
    for folder in VERSIONS:
        manifest = json.loads((folder / "manifest.json").read_text())
        assert (manifest["name"], manifest["version"]) == (folder.parent.name, folder.name)
        assert manifest.get("description"), folder  # what distinguishes this version, for /v1/models


def test_files_match_manifest_checksums(shipped_model):
    manifest = json.loads((shipped_model / "manifest.json").read_text())
    critic = {"ood_critic"} if manifest["likelihood"]["type"] == "bernoulli" else set()  # grey levels: none
    assert set(manifest["files"]) == {"encoder", "decoder", "scorer", "ood"} | critic  # ood: the calibration
    for entry in manifest["files"].values():
        digest = hashlib.sha256((shipped_model / entry["file"]).read_bytes()).hexdigest()
        assert digest == entry["sha256"], entry["file"]


def test_what_replicas_carry_stays_under_20_mb_and_the_folder_under_25_mb(shipped_model):
    """Replicas and images carry every file but the checkpoint (.dockerignore); the checkpoint, which
    `cvae evaluate` and `cvae ais` read, stays in the repository. A flow proposal stores its extra
    parameters twice (checkpoint and scorer.onnx), so the folder's bound is the larger."""
    sizes = {p.name: p.stat().st_size for p in shipped_model.iterdir() if p.is_file()}
    assert sum(size for name, size in sizes.items() if name != "checkpoint.pt") < 20 * 1024 * 1024
    assert sum(sizes.values()) < 25 * 1024 * 1024


def test_manifest_carries_test_metrics_and_the_card_exists(shipped_model):
    manifest = json.loads((shipped_model / "manifest.json").read_text())
    metrics = manifest["metrics"]
    for key in ("nll", "bits_per_dim", "accuracy", "ece_15_bins", "num_importance_samples", "num_test_images"):
        assert key in metrics
    card = (shipped_model / "MODEL_CARD.md").read_text()
    assert f"{metrics['nll']:.2f} nats" in card
    assert (shipped_model / "samples.png").is_file() and (shipped_model / "reconstructions.png").is_file()
