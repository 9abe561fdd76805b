"""Inputs unlike MNIST digits are named in the answer; inversion and MNIST-style preparation."""

import gzip

import numpy as np
import pytest

from service.engine.pixels import emptiness_warning, polarity_warning, prepare_mnist

SHAPE = (28, 28)


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    image = image.reshape(SHAPE)
    total = image.sum()
    return (image.sum(1) * np.arange(28)).sum() / total, (image.sum(0) * np.arange(28)).sum() / total


@pytest.fixture(scope="module")
def test_digits(mnist_dir):
    raw = gzip.decompress((mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes())
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 784)[:20] / 255.0


def test_checks_pass_real_digits_and_flag_blank_and_reversed_ones(test_digits):
    for digit in test_digits:
        assert polarity_warning(digit, SHAPE) is None and emptiness_warning(digit) is None
    assert emptiness_warning(np.zeros(784))["code"] == "nearly_empty"
    assert polarity_warning(1 - test_digits[0], SHAPE)["code"] == "reversed_polarity"
    assert "invert: true" in polarity_warning(1 - test_digits[0], SHAPE)["message"]


def test_preparation_centres_a_shifted_small_digit(test_digits):
    small = np.zeros(SHAPE)
    small[1:11, 15:22] = test_digits[0].reshape(SHAPE)[5:25, 4:24][::2, ::3][:10, :7]  # shrunk into a corner
    prepared = prepare_mnist(small.reshape(-1), SHAPE)
    rows, cols = np.nonzero(prepared.reshape(SHAPE) > 0.05)
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 <= 21  # into the 20x20 box
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 >= 18
    y, x = centre_of_mass(prepared)
    assert abs(y - 14) <= 1 and abs(x - 14) <= 1  # where MNIST's digits have theirs


def test_preparation_leaves_mnist_digits_nearly_as_they_are(test_digits):
    changed = [np.mean((prepare_mnist(d, SHAPE) > 0.5) != (d > 0.5)) for d in test_digits]
    assert np.median(changed) < 0.05  # MNIST digits were made this way
    assert np.array_equal(prepare_mnist(np.zeros(784), SHAPE), np.zeros(784))


def test_answers_carry_warnings_and_the_preparation_used(client, test_digits):
    digit = test_digits[0]
    blank = np.zeros(784)
    body = client.post(
        "/v1/classify",
        json={
            "images": [digit.tolist(), (1 - digit).tolist(), blank.tolist()],
            "num_samples": 50,
            "include": ["settings"],
        },
    ).json()
    assert (body["settings"]["invert"], body["settings"]["preprocess"]) == (False, "none")
    codes = [[w["code"] for w in r["warnings"]] for r in body["results"]]
    assert codes == [[], ["reversed_polarity"], ["nearly_empty"]]
    inverted = client.post(
        "/v1/log-likelihood", json={"images": [(1 - digit).tolist()], "num_samples": 50, "invert": True, "seed": 0}
    ).json()
    plain = client.post("/v1/log-likelihood", json={"images": [digit.tolist()], "num_samples": 50, "seed": 0}).json()
    assert inverted["results"][0]["warnings"] == []
    assert inverted["results"][0]["log_px"] == pytest.approx(plain["results"][0]["log_px"])
    prepared = client.post(
        "/v1/classify",
        json={"images": [digit.tolist()], "num_samples": 50, "preprocess": "mnist", "include": ["settings"]},
    ).json()
    assert prepared["settings"]["preprocess"] == "mnist" and prepared["results"][0]["warnings"] == []
