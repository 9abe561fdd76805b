"""Critics side by side on validation digits (bench.critics)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")  # the validation split comes from the training package

from bench.critics import compare, markdown, validation_digits  # noqa: E402
from service.runtime import CRITIC  # noqa: E402


def test_the_shipped_critic_ranks_reversed_digits_and_blank_pages_below_validation_digits(mnist_dir, shipped_model):
    digits = validation_digits(str(mnist_dir), 200)
    assert digits.shape == (200, 784) and 0.0 <= digits.min() and digits.max() <= 1.0
    graph = str(shipped_model / f"{CRITIC}.onnx")
    sets = {"inverted": 1.0 - digits[:50], "shuffled": digits[:50, np.random.default_rng(0).permutation(784)]}
    results = compare([graph], digits, sets)
    assert results[graph]["inverted"] > 0.95 and results[graph]["shuffled"] > 0.95
    table = markdown(results).splitlines()
    assert table[0] == "| critic | inverted | shuffled |" and len(table) == 3 and graph in table[2]
