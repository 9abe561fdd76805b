"""The benchmarks' test set is the model card's."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("torch")

from bench.common import arguments, benchmark, mnist_digits  # noqa: E402


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
    x, labels = mnist_digits(20, mnist_dir, "binary")
    assert x.dtype == np.float32 and set(np.unique(x)) <= {0.0, 1.0}
    np.testing.assert_array_equal(x, seen["x"])
    np.testing.assert_array_equal(labels, seen["labels"])
    all_x, _ = mnist_digits(0, mnist_dir, "binary")
    assert len(all_x) == 10000 and np.array_equal(all_x[:20], x)  # a shorter run scores the same first images


def test_grey_test_digits_are_the_pixels_over_255_and_mnist_dir_names_the_folder(mnist_dir, monkeypatch):
    monkeypatch.setenv("MNIST_DIR", str(mnist_dir))
    grey, labels = mnist_digits(5)
    assert grey.shape == (5, 784) and 0 <= grey.min() and grey.max() <= 1 and labels.dtype == np.int64
    pixels, _ = mnist_digits(5, form="pixels")
    assert pixels.dtype == np.uint8 and np.array_equal(grey, pixels / 255.0)
    x, _ = mnist_digits(5, form="binary")
    assert ((grey == 0) <= (x == 0)).all()  # no ink drawn where the pixel has none
    with pytest.raises(ValueError, match="choose 'pixels', 'grey' or 'binary'"):
        mnist_digits(5, form="gray")


def test_a_benchmark_records_its_command_and_stops_on_missing_digits_with_the_fix(mnist_dir, tmp_path, capsys):
    parser = arguments("bench.example", "An example.", images=(3, "digits read"))
    measure = lambda args: {"images": len(mnist_digits(args.images, args.data_dir)[0])}  # noqa: E731
    argv = ["--data-dir", str(mnist_dir), "--out", str(tmp_path)]
    report = benchmark(parser, argv, "example", measure, lambda r: f"{r['images']} digits")
    assert report["command"] == f"python -m bench.example {' '.join(argv)}" and report["images"] == 3
    assert report["data_dir"] == str(mnist_dir) and report["cpu_count"] == os.cpu_count()
    assert (tmp_path / "EXAMPLE.md").read_text() == "3 digits" and "example.json" in os.listdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        benchmark(parser, ["--data-dir", str(tmp_path / "nowhere")], "example", measure, str)
    assert stopped.value.code == 2 and "`cvae download --data-dir DIR`" in capsys.readouterr().err
