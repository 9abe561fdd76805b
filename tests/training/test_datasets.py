"""Labelled images in the forms users hold them: a folder per class, an IDX pair, an .npz; and the refusals."""

import gzip
import struct

import numpy as np
import pytest
from PIL import Image

from training.datasets import DataError, read_images

SHAPE = (12, 16)  # H, W: not MNIST's size
CLASSES = ("boot", "coat", "shirt")


def pictures(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, *SHAPE), dtype=np.uint8)


def class_folders(root, per_class=(2, 3, 1), fmt="PNG"):
    x, y = [], []
    for label, (name, count) in enumerate(zip(CLASSES, per_class)):
        (root / name).mkdir(parents=True)
        for i, image in enumerate(pictures(count, seed=label)):
            Image.fromarray(image).save(root / name / f"{i}.{fmt.lower()}", fmt)
            x.append(image)
            y.append(label)
    return np.stack(x), np.array(y)


def write_idx(path, values, magic):
    path.write_bytes(gzip.compress(struct.pack(f">{values.ndim + 1}I", magic, *values.shape) + values.tobytes()))


def test_a_folder_per_class_is_read_with_the_folder_names_as_classes(tmp_path):
    x, y = class_folders(tmp_path / "set")
    (tmp_path / "set" / ".cache").mkdir()  # hidden: not a class
    read = read_images(tmp_path / "set")
    assert read.class_names == CLASSES and read.shape == SHAPE
    assert np.array_equal(read.x, x.reshape(len(x), -1)) and np.array_equal(read.y, y) and read.x.dtype == np.uint8


def test_jpeg_and_grey_rgb_are_read_as_grey_levels(tmp_path):
    class_folders(tmp_path / "set", fmt="JPEG")
    Image.fromarray(np.stack([pictures(1)[0]] * 3, axis=-1)).save(tmp_path / "set" / "coat" / "rgb.png")
    read = read_images(tmp_path / "set")
    assert read.shape == SHAPE and len(read.y) == 7 and np.bincount(read.y).tolist() == [2, 4, 1]


def test_an_idx_pair_is_read_by_its_images_file_or_its_folder(tmp_path):
    x, y = pictures(5), np.array([0, 1, 2, 1, 0], np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", x, 2051)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", y, 2049)
    for path in (tmp_path / "train-images-idx3-ubyte.gz", tmp_path):
        read = read_images(path)
        assert read.shape == SHAPE and read.class_names == ("0", "1", "2")
        assert np.array_equal(read.x, x.reshape(5, -1)) and np.array_equal(read.y, y)


def test_an_npz_is_read_with_its_class_names(tmp_path):
    x, y = pictures(4), np.array([1, 0, 1, 0])
    np.savez(tmp_path / "set.npz", x=x, y=y, class_names=np.array(["cat", "dog"]))
    read = read_images(tmp_path / "set.npz")
    assert read.class_names == ("cat", "dog") and read.shape == SHAPE and np.array_equal(read.y, y)
    np.savez(tmp_path / "plain.npz", x=x, y=y)
    assert read_images(tmp_path / "plain.npz").class_names == ("0", "1")


def bad(tmp_path, case):
    root = tmp_path / "set"
    class_folders(root)
    if case == "mixed sizes":
        Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "coat" / "small.png")
    elif case == "colour":
        colour = np.zeros((*SHAPE, 3), np.uint8)
        colour[..., 0] = 200
        Image.fromarray(colour).save(root / "shirt" / "red.png")
    elif case == "empty class":
        (root / "dress").mkdir()
    elif case == "unreadable":
        (root / "boot" / "notes.txt").write_text("not an image")
    elif case == "16-bit":
        Image.fromarray(np.zeros(SHAPE, np.uint16)).save(root / "boot" / "deep.png")
    return root


@pytest.mark.parametrize(
    "case, named, fix",
    [
        ("mixed sizes", "small.png is 10x10 pixels", "resize them alike"),
        ("colour", "red.png is a colour image", "convert it to greyscale"),
        ("empty class", "dress is empty", "at least one image"),
        ("unreadable", "notes.txt cannot be read as an image", "remove it"),
        ("16-bit", "deep.png holds I;16 pixels", "8 bits per pixel"),
    ],
)
def test_a_folder_that_cannot_be_read_is_refused_naming_the_file_and_the_fix(tmp_path, case, named, fix):
    with pytest.raises(DataError) as refused:
        read_images(bad(tmp_path, case))
    assert named in str(refused.value) and fix in str(refused.value)


def test_idx_and_npz_refusals_name_the_file_and_the_fix(tmp_path):
    write_idx(tmp_path / "a-images-idx3-ubyte.gz", pictures(3), 2051)
    with pytest.raises(DataError, match="no labels file beside it: expected a-labels-idx1-ubyte.gz"):
        read_images(tmp_path / "a-images-idx3-ubyte.gz")
    write_idx(tmp_path / "a-labels-idx1-ubyte.gz", np.array([0, 1], np.uint8), 2049)
    with pytest.raises(DataError, match="holds 3 images but .* 2 labels"):
        read_images(tmp_path / "a-images-idx3-ubyte.gz")
    np.savez(tmp_path / "float.npz", x=pictures(2).astype(np.float32), y=np.array([0, 1]))
    with pytest.raises(DataError, match="x is float32 .* must be uint8"):
        read_images(tmp_path / "float.npz")
    np.savez(tmp_path / "gap.npz", x=pictures(2), y=np.array([0, 2]))
    with pytest.raises(DataError, match="class 1 has no images"):
        read_images(tmp_path / "gap.npz")
    with pytest.raises(DataError, match="does not exist"):
        read_images(tmp_path / "nowhere")
