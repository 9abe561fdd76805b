"""A tiny folder laid out as ../shared/data/outliers (training.handwriting), for the reader's tests and the
benchmark's: a few images per source, each an off-centre block of ink unlike any other of its source."""

from __future__ import annotations

import dataclasses
import gzip
import struct
from pathlib import Path

import numpy as np

from training.data import IMAGE_MAGIC, LABEL_MAGIC
from training.handwriting import SOURCES

COUNTS = {"kannada-test": (30,), "dig-mnist": (20,), "quickdraw": (15,), "math-operators": (12, 6, 6)}
OPERATORS = ("addition_plus", "division_obelus", "division_slash", "multiplication_cross", "multiplication_dot")
OPERATORS += ("subtraction_minus",)


def write_idx(path: Path, values: np.ndarray) -> None:
    """Images [N, 28, 28] or labels [N] (uint8) as a gzip IDX file."""
    magic = IMAGE_MAGIC if values.ndim == 3 else LABEL_MAGIC
    header = struct.pack(f">{values.ndim + 1}I", magic, *values.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(header + values.astype(np.uint8).tobytes()))


def images(count: int) -> np.ndarray:
    """[count, 28, 28] uint8: image i a block of ink in the top-left corner, its place and size set by i."""
    x = np.zeros((count, 28, 28), dtype=np.uint8)
    for i in range(count):
        top, height, width = 1 + i % 5, 6 + i % 4, 3 + i % 7
        x[i, top : top + height, 2 : 2 + width] = 255
    return x


def handwriting_folder(root: Path, monkeypatch) -> Path:
    """Write the folder under `root` with the counts of COUNTS (SOURCES patched to expect them); labels
    cycle through each source's classes."""
    shrunk = {}
    for name, source in SOURCES.items():
        parts = tuple((stem, n) for (stem, _), n in zip(source.parts, COUNTS[name]))
        shrunk[name] = dataclasses.replace(source, parts=parts)
        classes = source.classes or OPERATORS
        for stem, n in parts:
            write_idx(root / source.folder / f"{stem}-images-idx3-ubyte.gz", images(n))
            write_idx(root / source.folder / f"{stem}-labels-idx1-ubyte.gz", np.arange(n) % len(classes))
        if source.classes is None:
            (root / source.folder / "classes.txt").write_text("\n".join(OPERATORS) + "\n")
    monkeypatch.setattr("training.handwriting.SOURCES", shrunk)
    return root
