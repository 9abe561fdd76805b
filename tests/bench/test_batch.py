"""The batch benchmark measures what it says, on a few digits."""

import numpy as np
import pytest

pytest.importorskip("ray")
pytest.importorskip("psutil")

from bench.batch import in_process, markdown, peak_memory, with_ray  # noqa: E402


def test_throughput_rows_and_memory_peak(shipped_model, tmp_path):
    from service.engine.runtime import load_model
    from service.settings import Settings

    model = load_model(Settings(model_dir=shipped_model))
    logits = model.decode(np.random.default_rng(0).standard_normal((6, model.latent_dim)), np.arange(6))
    digits = np.round(255 / (1 + np.exp(-logits))).astype(np.uint8)
    np.save(tmp_path / "d.npy", digits)
    request = {"num_samples": 20}
    alone = in_process(str(shipped_model), digits, request)
    with peak_memory(interval=0.1) as peak:
        ray_rate = with_ray(tmp_path / "d.npy", str(shipped_model), 1, request, block_size=3)
    assert alone > 0 and ray_rate["whole"] > 0 and ray_rate["warm"] > 0  # 2 blocks: the second is after start-up
    assert peak["bytes"] > 50 * 2**20  # this process and Ray's hold at least the model and Ray itself
    report = {
        "cpu_count": 2,
        "model_dir": "m",
        "images": 6,
        "request": request,
        "throughput": {"in_process": alone, "ray_2x1": ray_rate, "ray_1x1": ray_rate},
    }
    text = markdown(report)
    assert "| in process" in text and "Scaling, 2 actors over 1: 1.00x over the whole job" in text
    assert "Throughput" not in markdown({"cpu_count": 2, "model_dir": "m"})  # a memory-only run
