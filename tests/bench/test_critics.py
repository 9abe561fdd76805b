"""Critics side by side on validation digits (bench.critics)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")  # the validation split comes from the training package

from bench.critics import aurocs, differences, markdown, markdown_differences, unusualness, validation_digits  # noqa: E402
from service.runtime import CRITIC  # noqa: E402


def test_the_shipped_critic_ranks_reversed_digits_and_blank_pages_below_validation_digits(mnist_dir, shipped_model):
    digits = validation_digits(str(mnist_dir), 200)
    assert digits.shape == (200, 784) and 0.0 <= digits.min() and digits.max() <= 1.0
    graph = str(shipped_model / f"{CRITIC}.onnx")
    sets = {"inverted": 1.0 - digits[:50], "shuffled": digits[:50, np.random.default_rng(0).permutation(784)]}
    results = aurocs(unusualness([graph], digits, sets))
    assert results[graph]["inverted"] > 0.95 and results[graph]["shuffled"] > 0.95
    table = markdown(results).splitlines()
    assert table[0] == "| critic | inverted | shuffled |" and len(table) == 3 and graph in table[2]


def test_differences_are_paired_a_copy_never_differs_and_a_clear_gap_stands_out():
    rng = np.random.default_rng(0)
    digits, letters = rng.normal(size=400), rng.normal(1.0, size=300)
    first = {"digits": digits, "letters": letters}
    same = {"digits": digits.copy(), "letters": letters.copy()}
    better = {"digits": digits, "letters": letters + 1.0}  # every letter more unusual than before
    scores = {"a": first, "same": same, "better": better}
    found = differences(scores, resamples=100)
    assert found["same"]["letters"] == (0.0, 0.0)  # paired draws: a copy never differs
    gap, error = found["better"]["letters"]
    table = aurocs(scores)
    assert gap == pytest.approx(table["better"]["letters"] - table["a"]["letters"]) and gap > 0.1
    assert 0.0 < error < gap / 5
    text = markdown_differences("a", found).splitlines()
    assert text[0] == "| critic - a | letters |" and text[3].startswith("| better | +")
