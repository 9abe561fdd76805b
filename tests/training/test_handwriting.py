"""The reader of real handwriting that is no MNIST digit, its preparation and its held-out split."""

from __future__ import annotations

import numpy as np
import pytest
from handwriting_files import COUNTS, OPERATORS, handwriting_folder, images, write_idx

from service.engine.pixels import prepare_mnist
from training import handwriting
from training.handwriting import LEFT_OUT, HandwritingDataError, apart, load_handwriting, split


@pytest.fixture
def folder(tmp_path, monkeypatch):
    return handwriting_folder(tmp_path / "outliers", monkeypatch)


def test_every_source_is_read_with_its_labels_and_class_names(folder):
    sources = load_handwriting(folder)
    assert list(sources) == ["kannada-test", "dig-mnist", "quickdraw", "math-operators"]
    for name, data in sources.items():
        assert data.name == name and data.x.dtype == np.uint8 and data.x.shape == (sum(COUNTS[name]), 784)
        np.testing.assert_array_equal(data.y, np.concatenate([np.arange(n) % len(data.classes) for n in COUNTS[name]]))
    assert sources["kannada-test"].classes[0] == "zero" and len(sources["dig-mnist"].classes) == 10
    assert sources["quickdraw"].classes == ("cat", "train", "rainbow")
    assert sources["math-operators"].classes == OPERATORS  # from classes.txt; train, val, test one after another
    assert sources["math-operators"].digit_shaped == ("division_slash", "subtraction_minus")


def test_a_missing_folder_names_the_files_expected(tmp_path):
    with pytest.raises(HandwritingDataError, match="does not exist.*kannada/ kannada-test, dig-mnist.*--outliers-dir"):
        load_handwriting(tmp_path / "nowhere")


def test_an_incomplete_folder_names_each_file_missing(folder):
    (folder / "quickdraw" / "quickdraw-labels-idx1-ubyte.gz").unlink()
    (folder / "math-operators" / "classes.txt").unlink()
    with pytest.raises(HandwritingDataError) as error:
        load_handwriting(folder)
    message = str(error.value)
    assert "lacks quickdraw/quickdraw-labels-idx1-ubyte.gz, math-operators/classes.txt." in message
    assert "kannada-test-images" not in message.split("Expected")[0]  # only what is missing


def test_a_file_not_as_expected_is_named_with_this_data_s_fix(folder):
    write_idx(folder / "kannada" / "dig-mnist-images-idx3-ubyte.gz", images(7))
    with pytest.raises(HandwritingDataError, match="dig-mnist-images.*holds 7 items, expected 20.*--outliers-dir") as e:
        load_handwriting(folder)
    assert "cvae download" not in str(e.value)  # not MNIST's advice
    write_idx(folder / "kannada" / "dig-mnist-images-idx3-ubyte.gz", images(20))
    write_idx(folder / "quickdraw" / "quickdraw-labels-idx1-ubyte.gz", np.full(15, 3))
    with pytest.raises(HandwritingDataError, match="quickdraw-labels.*label 3, but quickdraw has 3 classes"):
        load_handwriting(folder)


def test_sources_not_framed_as_mnist_are_prepared_by_the_service_s_preparation(folder):
    sources = load_handwriting(folder)
    raw = images(15).reshape(15, 784)
    np.testing.assert_array_equal(sources["kannada-test"].x, images(30).reshape(30, 784))  # framed: as read
    expected = np.stack([prepare_mnist(image / 255.0, (28, 28)) for image in raw])
    np.testing.assert_allclose(sources["quickdraw"].x / 255.0, expected, atol=0.5 / 255)
    for name in ("quickdraw", "math-operators"):
        ink = sources[name].x.reshape(-1, 28, 28) / 255.0
        rows = (ink.sum(axis=2) * np.arange(28)).sum(axis=1) / ink.sum(axis=(1, 2))
        assert np.all(np.abs(rows - 14) <= 1), name  # centre of mass in the middle, as MNIST's digits
        side = np.maximum((ink > 0.05).any(axis=2).sum(axis=1), (ink > 0.05).any(axis=1).sum(axis=1))
        assert np.all((side >= 19) & (side <= 21)), name  # the larger side scaled to the 20x20 box


def test_the_split_is_reproducible_disjoint_and_stratified(folder):
    parts = split(load_handwriting(folder))
    again = split(load_handwriting(folder))
    for name, part in parts.items():
        np.testing.assert_array_equal(part.held_out.x, again[name].held_out.x)
        np.testing.assert_array_equal(part.training.y, again[name].training.y)
        assert len(part.training.y) + len(part.held_out.y) == sum(COUNTS[name])
    kannada = parts["kannada-test"]  # its 30 images are all different
    training = {image.tobytes() for image in kannada.training.x}
    assert not training & {image.tobytes() for image in kannada.held_out.x}
    assert np.bincount(kannada.held_out.y).tolist() == [1] * 10  # a fifth of each class's 3, rounded
    assert np.bincount(parts["quickdraw"].held_out.y).tolist() == [1, 1, 1]
    assert len(parts["dig-mnist"].training.y) == 0  # Kannada by other writers: all held out
    held = handwriting.held_out_mask(load_handwriting(folder)["kannada-test"])
    assert np.nonzero(held)[0].tolist() == [4, 5, 6, 13, 18, 20, 21, 22, 27, 29]  # never moves


def test_the_left_out_source_is_never_in_a_training_part(folder):
    sources = load_handwriting(folder)
    parts = split(sources)
    assert len(parts[LEFT_OUT].training.y) == 0
    np.testing.assert_array_equal(parts[LEFT_OUT].held_out.x, sources[LEFT_OUT].x)  # all of it, as read


def test_classes_of_a_digit_s_shape_are_reported_apart(folder):
    operators = load_handwriting(folder)["math-operators"]
    groups = apart(operators)
    assert list(groups) == ["math-operators", "math-operators: division_slash", "math-operators: subtraction_minus"]
    assert set(groups["math-operators"].y) == {0, 1, 3, 4}
    assert set(groups["math-operators: division_slash"].y) == {2}
    assert sum(len(g.y) for g in groups.values()) == len(operators.y)
    assert list(apart(load_handwriting(folder)["quickdraw"])) == ["quickdraw"]  # no class of a digit's shape
