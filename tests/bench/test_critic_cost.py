"""What training the critic costs (bench.critic_cost), on a few hundred digits."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")  # the made-up non-digits' typefaces

from bench.critic_cost import main, markdown, run  # noqa: E402


def test_the_cost_is_timed_on_a_few_digits_and_extrapolated_to_the_default_training(mnist_dir, tmp_path):
    report = run(str(mnist_dir), num_digits=256, num_outliers=256, width=1, device="cpu")
    assert report["full"] == {"outliers": 240000, "epochs": 20, "digits": 55000}
    assert report["ms_per_outlier_drawn"] > 0 and report["ms_per_digit_epoch"] > 0
    expected = (report["ms_per_outlier_drawn"] * 240000 + report["ms_per_digit_epoch"] * 55000 * 20) / 1000
    assert report["seconds_full"] == pytest.approx(expected)
    assert "hours" in markdown(report)
    assert main(["--mnist-dir", str(mnist_dir), "--digits", "32", "--outliers", "32", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "critic_cost.json").exists() and (tmp_path / "CRITIC_COST.md").exists()
