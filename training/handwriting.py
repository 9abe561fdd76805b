"""Real handwriting that is not an MNIST digit, read from a folder the user names, and its split.

The folder holds, as gzip IDX files (28x28, bright ink on dark, a labels file beside each images
file), four sources:

- kannada-test, dig-mnist (kannada/): handwritten Kannada digits, the Kannada-MNIST test set and a
  second set by other writers on other sheets;
- quickdraw (quickdraw/): doodles from Quick, Draw! (cat, train, rainbow);
- math-operators (math-operators/): handwritten arithmetic operators, its published train, val and
  test files read one after the other, its class names in classes.txt.

Each is prepared as MNIST's digits were, by the service's own service.engine.pixels.prepare_mnist
(crop to the ink, 20x20 box, centre of mass in the middle), where it is not framed so already: the
Kannada sets are; the doodles (drawn to the field's edges) and the operators (centred by their box,
smaller than MNIST's 20 pixels) are not.

`split` keeps a part of every source out of training and out of every choice (docs/decisions.md):
a fifth of kannada-test and of quickdraw, stratified by class with a fixed seed; dig-mnist whole
(Kannada by other writers); and math-operators whole, the source left out (`LEFT_OUT`) that no
choice sees. Classes that share a digit's shape (Kannada zero, the slash, the minus) are named so
that reports give them apart.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from service.engine.pixels import prepare_mnist
from training.data import IMAGE_MAGIC, IMAGE_SIDE, LABEL_MAGIC, MnistDataError, read_idx

SHAPE = (IMAGE_SIDE, IMAGE_SIDE)
SPLIT_SEED = 0
LEFT_OUT = "math-operators"  # the source that neither training nor any choice sees
CLASSES_FILE = "classes.txt"
OUTLIERS_DIR_HELP = "folder of real handwriting that is not a digit, laid out as ../shared/data/outliers"
HOW_TO_GET = (
    "Point --outliers-dir at a folder laid out as ../shared/data/outliers (its README names the sources); "
    "the files are never part of the project."
)
KANNADA = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


class HandwritingDataError(RuntimeError):
    """The handwriting folder is missing, incomplete or holds files not as expected."""


@dataclass(frozen=True)
class OutlierSet:
    """Where a source lies in the folder and how it is read and split."""

    folder: str
    parts: tuple[tuple[str, int], ...]  # (IDX stem, images), read in this order
    classes: tuple[str, ...] | None  # None: one name a line in the folder's classes.txt
    digit_shaped: tuple[str, ...]  # classes that share a digit's shape, reported apart
    framed: bool  # already framed as MNIST's digits: read as they are
    held_out_share: float  # of each class, out of training and of every choice
    licence: str


SOURCES = {
    "kannada-test": OutlierSet(
        "kannada", (("kannada-test", 10_000),), KANNADA, ("zero",), True, 0.2,
        "not stated in its repository; published with arXiv:1908.01242 (cite it)",
    ),
    "dig-mnist": OutlierSet(
        "kannada", (("dig-mnist", 10_240),), KANNADA, ("zero",), True, 1.0,
        "not stated in its repository; published with arXiv:1908.01242 (cite it)",
    ),
    "quickdraw": OutlierSet(
        "quickdraw", (("quickdraw", 3_000),), ("cat", "train", "rainbow"), (), False, 0.2,
        "Quick, Draw! data CC BY 4.0 (the copy from an MIT-licensed repository)",
    ),
    "math-operators": OutlierSet(
        "math-operators", (("train", 4_803), ("val", 600), ("test", 603)), None,
        ("division_slash", "subtraction_minus"), False, 1.0, "MIT",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Handwriting:
    """One source: pixels x as uint8 [N, 784] (bright ink on dark, prepared as MNIST's digits), labels y
    as int64 [N] indexing `classes`."""

    name: str
    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    digit_shaped: tuple[str, ...]

    def take(self, index: np.ndarray) -> Handwriting:
        """The images at `index` (positions [M] or a mask [N])."""
        return replace(self, x=self.x[index], y=self.y[index])

    def of_classes(self, names: tuple[str, ...]) -> np.ndarray:
        """A mask [N] of the images whose class is one of `names`."""
        return np.isin(self.y, [self.classes.index(name) for name in names])


@dataclass(frozen=True)
class Split:
    training: Handwriting  # for training and for every choice (a validation slice is cut from it)
    held_out: Handwriting  # reported on, never looked at before


def load_handwriting(folder: str | Path) -> dict[str, Handwriting]:
    """Every source of `folder`, by name; HandwritingDataError naming every file missing."""
    root = Path(folder)
    if not root.is_dir():
        raise HandwritingDataError(f"Handwriting folder {root} does not exist. {expected()} {HOW_TO_GET}")
    missing = [str(path.relative_to(root)) for path in _files(root) if _existing(path) is None]
    if missing:
        raise HandwritingDataError(f"{root} lacks {', '.join(missing)}. {expected()} {HOW_TO_GET}")
    return {name: _read(root, name, source) for name, source in SOURCES.items()}


def expected() -> str:
    """The layout read, in words."""
    folders: dict[str, list[str]] = {}
    for source in SOURCES.values():
        folders.setdefault(source.folder, []).extend(stem for stem, _ in source.parts)
    listed = "; ".join(f"{folder}/ {', '.join(stems)}" for folder, stems in folders.items())
    named = " and ".join(f"{s.folder}/{CLASSES_FILE}" for s in SOURCES.values() if s.classes is None)
    return (
        f"Expected the IDX files of {listed}, each STEM as STEM-images-idx3-ubyte.gz and STEM-labels-idx1-ubyte.gz "
        f"(gzip IDX, 28x28, bright ink on dark), and {named} (a class name a line)."
    )


def held_out_mask(data: Handwriting) -> np.ndarray:
    """A mask [N] of the images held out: of each class, its source's held_out_share of a permutation
    seeded with SPLIT_SEED, so that a source's split depends on its own files alone."""
    share = SOURCES[data.name].held_out_share
    rng = np.random.default_rng(SPLIT_SEED)
    mask = np.zeros(len(data.y), dtype=bool)
    for label in range(len(data.classes)):
        members = rng.permutation(np.nonzero(data.y == label)[0])
        mask[members[: round(share * len(members))]] = True
    return mask


def split(sources: dict[str, Handwriting]) -> dict[str, Split]:
    """Each source's training part and held-out part (held_out_mask); the left-out source is all held out."""
    parts = {}
    for name, data in sources.items():
        held = np.ones(len(data.y), dtype=bool) if name == LEFT_OUT else held_out_mask(data)
        parts[name] = Split(training=data.take(~held), held_out=data.take(held))
    return parts


def for_training(folder: str | Path) -> Handwriting:
    """What a critic may learn from: every source's training part (split) but the classes that share a
    digit's shape, which it must not learn to call "not a digit", together, named by their sources."""
    parts = [part.training for part in split(load_handwriting(folder)).values()]
    parts = [part.take(~part.of_classes(part.digit_shaped)) for part in parts]
    parts = [part for part in parts if len(part.y)]
    x = np.concatenate([part.x for part in parts])
    return Handwriting(", ".join(part.name for part in parts), x, np.zeros(len(x), np.int64), ("not a digit",), ())


def apart(data: Handwriting) -> dict[str, Handwriting]:
    """A source's images as reported: those of no digit's shape under its name, and each class that
    shares a digit's shape on its own, as "name: class"."""
    groups = {data.name: data.take(~data.of_classes(data.digit_shaped))}
    groups.update({f"{data.name}: {name}": data.take(data.of_classes((name,))) for name in data.digit_shaped})
    return groups


def _files(root: Path) -> list[Path]:
    files = []
    for source in SOURCES.values():
        files += [_idx(root / source.folder, stem, kind) for stem, _ in source.parts for kind in ("images", "labels")]
        if source.classes is None:
            files.append(root / source.folder / CLASSES_FILE)
    return files


def _idx(folder: Path, stem: str, kind: str) -> Path:
    return folder / f"{stem}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz"


def _existing(path: Path) -> Path | None:
    """`path`, or the same file uncompressed (IDX without .gz), whichever is there."""
    return next((p for p in (path, path.with_suffix("")) if p.is_file()), None)


def _read(root: Path, name: str, source: OutlierSet) -> Handwriting:
    folder = root / source.folder
    classes = source.classes or tuple(folder.joinpath(CLASSES_FILE).read_text().split())
    xs, ys = [], []
    for stem, count in source.parts:
        try:
            xs.append(read_idx(_existing(_idx(folder, stem, "images")), IMAGE_MAGIC, count, HOW_TO_GET))
            ys.append(read_idx(_existing(_idx(folder, stem, "labels")), LABEL_MAGIC, count, HOW_TO_GET))
        except MnistDataError as error:
            raise HandwritingDataError(str(error)) from None
        if ys[-1].max() >= len(classes):
            raise HandwritingDataError(
                f"{_idx(folder, stem, 'labels')} holds label {ys[-1].max()}, but {name} has {len(classes)} classes "
                f"({', '.join(classes)}). {HOW_TO_GET}"
            )
    x = np.concatenate(xs)
    if not source.framed:
        prepared = np.stack([prepare_mnist(image / 255.0, SHAPE) for image in x])  # [N, 784] in [0, 1]
        x = np.round(255 * np.clip(prepared, 0, 1)).astype(np.uint8)
    return Handwriting(name, x, np.concatenate(ys), classes, source.digit_shaped)
