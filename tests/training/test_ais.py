"""`cvae ais`: the service's answers against annealed importance sampling, on real digits."""

import pytest

torch = pytest.importorskip("torch")

from training.anneal import AisConfig  # noqa: E402


def test_cvae_ais_compares_the_service_with_ais_on_real_digits(shipped_model, mnist_dir, tmp_path, monkeypatch):
    """`cvae ais` on three test images with a short schedule: every image gets both answers, the
    summary reaches the manifest and the card, and the two agree to within a few nats. The service's
    side is Scorer.score_now's at the declared defaults, whatever CVAE_* variables the shell holds."""
    import json
    import shutil

    import numpy as np

    from service.engine.scoring import Scorer
    from service.schemas.options import ClassifyOptions
    from training.ais import run
    from training.data import load_mnist
    from training.train import binarize

    model_dir = tmp_path / "model"
    shutil.copytree(shipped_model, model_dir)
    with monkeypatch.context() as shell:  # were ais to read them: refused (7 passes at most), or K = 3
        for name, value in {"CVAE_MAX_WORK": "7", "CVAE_DEFAULT_NUM_SAMPLES": "3", "CVAE_OOD_FPR": "0.5"}.items():
            shell.setenv(name, value)
        summary = run(model_dir, mnist_dir, 3, AisConfig(num_chains=4, num_temperatures=20, leapfrog_steps=2))
    record = json.loads((model_dir / "ais.json").read_text())
    assert len(record["images"]) == 3 and summary["ais_rows"] >= 3
    for image in record["images"]:
        assert abs(image["gap"]) < 5 and image["ais_std_error"] >= 0
    x = binarize(torch.from_numpy(load_mnist(mnist_dir).test_x[:3]), torch.Generator().manual_seed(0)).numpy()
    engine = Scorer.open(shipped_model).score_now(x, ClassifyOptions(seed=0))
    assert [image["service_log_px"] for image in record["images"]] == engine.bayes.log_px.tolist()
    assert [image["service_samples"] for image in record["images"]] == engine.samples_used.tolist()
    np.testing.assert_array_equal(
        [image["service_std_error"] for image in record["images"]], engine.bayes.log_px_std_error
    )
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["metrics"]["ais"]["mean_abs_gap_nats"] == summary["mean_abs_gap_nats"]
    from training.card import card_text

    assert "Against annealed importance sampling" in card_text(manifest)
