"""A labelled set of small greyscale images in the forms users hold it, read into one shape.

- a folder with one sub-folder of images per class (any format Pillow reads: PNG, JPEG, ...); the
  class names are the sub-folders' names, in sorted order;
- a pair of IDX files: the images file (magic 2051, N x H x W) with its labels file (magic 2049)
  beside it, named alike with `labels` for `images` (train-images-idx3-ubyte[.gz] and
  train-labels-idx1-ubyte[.gz]), or a folder that holds exactly one such pair;
- an `.npz` with `x` (uint8 [N, H, W]) and `y` (integers [N] from 0), and optionally `class_names`.

Every image of a set has one size, and 8-bit grey levels. What cannot be read is refused with a
DataError that names the file and what to do: mixed sizes, colour, an empty class, an unreadable file.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from training.data import IMAGE_MAGIC, LABEL_MAGIC, Mnist, load_mnist
from training.data import data_dir as mnist_dir

FORMS = (
    "a folder with one sub-folder of images per class, a pair of IDX files (images and labels), or an .npz "
    "with x [N, H, W] uint8 and y [N]"
)

OWN_DATA_HELP = (
    "train on your own labelled greyscale images instead of MNIST: a folder with one sub-folder of images per "
    "class, an IDX images file with its labels file beside it, or an .npz with x and y; the model takes their size "
    "and classes, and is exported as NAME-cvae (NAME: the folder's or file's)"
)


class DataError(ValueError):
    """A data set that cannot be read as labelled greyscale images of one size."""


@dataclass(frozen=True)
class Images:
    """Pixels x as uint8 [N, H*W], labels y as int64 [N] indexing `class_names`, images of `shape` (H, W)."""

    x: np.ndarray
    y: np.ndarray
    shape: tuple[int, int]
    class_names: tuple[str, ...]
    source: str


def read_images(path: str | Path) -> Images:
    """The data set at `path`, in whichever of the FORMS it is; DataError naming the file and the fix."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist: give {FORMS}.")
    if path.suffix == ".npz":
        return _npz(path)
    if path.is_dir():
        classes = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        if classes:
            return _folder(path, classes)
        pairs = [p for p in sorted(path.iterdir()) if "images" in p.name and _labels_of(p).exists()]
        if len(pairs) != 1:
            raise DataError(f"{path} holds no class sub-folders and {len(pairs)} IDX image/label pairs: give {FORMS}.")
        path = pairs[0]
    return _idx_pair(path)


def training_set(data_dir: str | Path | None, data: str | Path | None) -> Mnist:
    """The training images a model was trained on: those at `data` (as `cvae train --data` read them, with no test
    split), else MNIST's from `data_dir` or $MNIST_DIR (training.data.data_dir)."""
    if data is None:
        return load_mnist(mnist_dir(data_dir))
    images = read_images(data)
    return Mnist(images.x, images.y, images.x[:0], images.y[:0])


def dataset_name(path: str | Path) -> str:
    """A model name for the set at `path`: its folder's name (a file's folder, for an IDX pair), or an .npz's
    stem, in lower case with every character but letters, digits, '-', '_' and '.' made '-'."""
    path = Path(path).resolve()
    return name_of(path.name if path.is_dir() else path.stem if path.suffix == ".npz" else path.parent.name)


def name_of(text: str) -> str:
    """`text` in lower case with every character but letters, digits, '-', '_' and '.' made '-': a model's name."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text.lower()).strip("-.") or "images"


def _labelled(x: np.ndarray, y: np.ndarray, names: tuple[str, ...], source: str) -> Images:
    """Images x [N, H, W] with labels y, every class present."""
    counts = np.bincount(y, minlength=len(names))
    if (counts == 0).any():
        empty = [names[i] for i in np.nonzero(counts == 0)[0]]
        raise DataError(f"{source}: class {', '.join(empty)} has no images; give each class at least one.")
    return Images(x.reshape(len(x), -1), y.astype(np.int64), (x.shape[1], x.shape[2]), names, source)


def _folder(root: Path, classes: list[Path]) -> Images:
    images, labels, size, first = [], [], None, None
    for label, folder in enumerate(classes):
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise DataError(f"{folder} is empty: give the class {folder.name!r} at least one image, or remove it.")
        for file in files:
            grey = _grey(file)
            if size is None:
                size, first = grey.shape, file
            elif grey.shape != size:
                raise DataError(
                    f"{file} is {grey.shape[1]}x{grey.shape[0]} pixels, but {first} is {size[1]}x{size[0]}: every "
                    "image of a set must have one size; resize them alike."
                )
            images.append(grey)
            labels.append(label)
    return _labelled(np.stack(images), np.array(labels), tuple(c.name for c in classes), str(root))


def _grey(file: Path) -> np.ndarray:
    """One image file as uint8 [H, W]: grey levels, or colour whose channels are equal everywhere."""
    try:
        with Image.open(file) as image:
            image.load()
            mode = image.mode
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                raise DataError(f"{file} holds {mode} pixels, not 8-bit grey levels: save it with 8 bits per pixel.")
            if mode in ("L", "1"):
                return np.asarray(image.convert("L"))
            rgba = np.asarray(image.convert("RGBA"))
    except (OSError, UnidentifiedImageError, ValueError) as error:
        if isinstance(error, DataError):
            raise
        raise DataError(f"{file} cannot be read as an image ({error}): remove it, or save it as a PNG.") from None
    if (rgba[..., 3] != 255).any():
        raise DataError(f"{file} has transparent pixels: save it without transparency, as grey levels.")
    if not ((rgba[..., 0] == rgba[..., 1]).all() and (rgba[..., 1] == rgba[..., 2]).all()):
        raise DataError(f"{file} is a colour image: convert it to greyscale (8-bit, one channel).")
    return rgba[..., 0].copy()


def _labels_of(images: Path) -> Path:
    return images.with_name(images.name.replace("images", "labels").replace("idx3", "idx1"))


def _idx(path: Path, magic: int) -> np.ndarray:
    """The values of an IDX file of `magic`, gzip or raw, shaped by its header."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise DataError(f"{path} cannot be read ({error}): give an IDX file, gzip-compressed or raw.") from None
    dims = 3 if magic == IMAGE_MAGIC else 1
    header = 4 + 4 * dims
    if len(raw) < header or struct.unpack(">I", raw[:4])[0] != magic:
        kind = "images (magic 2051, N x H x W)" if magic == IMAGE_MAGIC else "labels (magic 2049, N)"
        raise DataError(f"{path} is not an IDX file of {kind}: give the {kind.split()[0]} file of the pair.")
    shape = struct.unpack(f">{dims}I", raw[4:header])
    if len(raw) != header + int(np.prod(shape)):
        raise DataError(f"{path} is {len(raw)} bytes once decompressed, expected {header + int(np.prod(shape))}.")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape).copy()


def _idx_pair(images: Path) -> Images:
    labels = _labels_of(images)
    if labels == images or not labels.exists():
        raise DataError(f"{images} has no labels file beside it: expected {labels.name}, named as it is.")
    x, y = _idx(images, IMAGE_MAGIC), _idx(labels, LABEL_MAGIC)
    if len(x) != len(y):
        raise DataError(f"{images} holds {len(x)} images but {labels} {len(y)} labels: give one label an image.")
    names = tuple(str(label) for label in range(int(y.max()) + 1))
    return _labelled(x, y, names, str(images))


def _npz(path: Path) -> Images:
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
    except (OSError, ValueError) as error:
        raise DataError(f"{path} cannot be read as an .npz ({error}): save it with numpy.savez.") from None
    if "x" not in arrays or "y" not in arrays:
        raise DataError(f"{path} holds {sorted(arrays)}: it needs x (uint8 [N, H, W]) and y ([N]).")
    x, y = arrays["x"], arrays["y"]
    if x.dtype != np.uint8 or x.ndim != 3:
        raise DataError(f"{path}: x is {x.dtype} {list(x.shape)}; it must be uint8 [N, H, W], one grey level a pixel.")
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise DataError(f"{path}: y is {y.dtype} {list(y.shape)}; it must be integers from 0, one per image of x.")
    count = int(y.max()) + 1 if len(y) else 0
    names = tuple(str(n) for n in arrays["class_names"]) if "class_names" in arrays else tuple(map(str, range(count)))
    if len(names) < count:
        raise DataError(f"{path}: y goes up to {count - 1} but class_names names {len(names)} classes.")
    return _labelled(x, y, names, str(path))
