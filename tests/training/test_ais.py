"""`cvae ais`: the service's answers against annealed importance sampling, on real digits."""

import pytest

pytest.importorskip("torch")

from training.anneal import AisConfig  # noqa: E402


def test_cvae_ais_compares_the_service_with_ais_on_real_digits(shipped_model, mnist_dir, tmp_path):
    """`cvae ais` on three test images with a short schedule: every image gets both answers, the
    summary reaches the manifest and the card, and the two agree to within a few nats."""
    import json
    import shutil

    from training.ais import run

    model_dir = tmp_path / "model"
    shutil.copytree(shipped_model, model_dir)
    summary = run(model_dir, mnist_dir, 3, AisConfig(num_chains=4, num_temperatures=20, leapfrog_steps=2))
    record = json.loads((model_dir / "ais.json").read_text())
    assert len(record["images"]) == 3 and summary["ais_rows"] >= 3
    for image in record["images"]:
        assert abs(image["gap"]) < 5 and image["ais_std_error"] >= 0
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["metrics"]["ais"]["mean_abs_gap_nats"] == summary["mean_abs_gap_nats"]
    from training.card import card_text

    assert "Against annealed importance sampling" in card_text(manifest)
