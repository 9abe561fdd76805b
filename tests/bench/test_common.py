"""The benchmarks' test set is the model card's."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from bench.common import binary_test_digits, grey_test_digits  # noqa: E402


class Scored(Exception):
    """Raised by the stand-in scorer once it has seen the images."""


def test_the_binary_test_digits_are_the_images_cvae_evaluate_scores(shipped_model, mnist_dir, monkeypatch):
    from training import evaluate

    seen = {}

    def stand_in(scorer, x, labels, *args, **kwargs):
        seen["x"], seen["labels"] = x, labels
        raise Scored

    monkeypatch.setattr(evaluate, "score", stand_in)
    with pytest.raises(Scored):
        evaluate.run(shipped_model, mnist_dir, num_samples=2, limit=20, card=False)
    x, labels = binary_test_digits(20, mnist_dir)
    assert x.dtype == np.float32 and set(np.unique(x)) <= {0.0, 1.0}
    np.testing.assert_array_equal(x, seen["x"])
    np.testing.assert_array_equal(labels, seen["labels"])
    all_x, _ = binary_test_digits(0, mnist_dir)
    assert len(all_x) == 10000 and np.array_equal(all_x[:20], x)  # a shorter run scores the same first images


def test_grey_test_digits_are_the_pixels_over_255_and_mnist_dir_names_the_folder(mnist_dir, monkeypatch):
    monkeypatch.setenv("MNIST_DIR", str(mnist_dir))
    grey, labels = grey_test_digits(5)
    assert grey.shape == (5, 784) and 0 <= grey.min() and grey.max() <= 1 and labels.dtype == np.int64
    x, _ = binary_test_digits(5)
    assert ((grey == 0) <= (x == 0)).all()  # no ink drawn where the pixel has none
