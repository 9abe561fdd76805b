"""Choosing the critic's weight on the design sets (bench.combination)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")  # the validation split comes from the training package

from bench import ood_sets  # noqa: E402
from bench.combination import WEIGHTS, choose, markdown, run  # noqa: E402


def _table(smallest_at: float, height: float) -> dict[float, dict[str, float]]:
    """AUROCs that peak at one weight, with a set that never limits."""
    return {w: {"letters": height - abs(w - smallest_at), "noise": 1.0} for w in WEIGHTS}


def test_the_weight_chosen_has_the_largest_smallest_auroc_over_every_model():
    assert choose([_table(0.8, 0.99)]) == 0.8
    # two models: the second is the lower everywhere, so the smallest AUROC is largest where it peaks
    assert choose([_table(0.8, 2.0), _table(0.6, 0.99)]) == 0.6
    # where both limit, the best lies between their peaks
    assert choose([_table(0.8, 0.99), _table(0.6, 0.99)]) == 0.7


def test_between_equal_weights_the_one_nearest_equal_weight_wins():
    flat = {w: {"letters": 0.99} for w in WEIGHTS}
    assert choose([flat]) == 0.5
    plateau = {w: {"letters": 0.995 if w >= 0.7 else 0.99} for w in WEIGHTS}
    assert choose([plateau]) == 0.7


def test_a_small_run_scores_every_design_set_at_every_weight(mnist_dir, shipped_model):
    if not ood_sets.fonts(ood_sets.FONT_FAMILIES["design"]):
        pytest.skip("no DejaVu fonts on this machine")
    report = run([str(shipped_model)], str(mnist_dir), num_digits=60, per_set=12, seed=100, resamples=5)
    table = report["auroc"][str(shipped_model)]
    assert list(table) == [str(w) for w in WEIGHTS]
    names = {"blank", "strokes", "inverted", "noise", "letters", "glyphs", "reshaped"}
    assert all(set(row) == names for row in table.values())
    assert report["smallest"][str(report["chosen"])] == max(report["smallest"].values())
    assert report["smallest"]["0.5"] == min(table["0.5"].values())
    # reversed digits are no digits to either piece of evidence, at every weight
    assert all(row["inverted"] > 0.95 for row in table.values())
    text = markdown(report)
    assert f"Chosen: w = {report['chosen']}" in text and "| w | blank |" in text


def test_digits_from_the_half_that_p_values_count_against_are_refused(mnist_dir, shipped_model):
    """The weight may be chosen on the first half of the reference only: the false-positive rate rests on the second."""
    with pytest.raises(SystemExit, match=r"--digits 2501 reaches into the second half .* at most 2500"):
        run([str(shipped_model)], str(mnist_dir), num_digits=2501, per_set=2, seed=100, resamples=2)
