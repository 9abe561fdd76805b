"""MNIST from its four IDX files: reading, validation and download.

The IDX format is a big-endian header (magic number, then one uint32 per
dimension) followed by raw uint8 values. Files may be gzip-compressed or raw.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049
IMAGE_SIDE = 28
NUM_CLASSES = 10

# name -> (magic, item count, canonical MD5 of the published .gz file)
FILES = {
    "train-images-idx3-ubyte": (IMAGE_MAGIC, 60000, "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train-labels-idx1-ubyte": (LABEL_MAGIC, 60000, "d53e105ee54ea40749a09fcbcd1e9432"),
    "t10k-images-idx3-ubyte": (IMAGE_MAGIC, 10000, "9fb629c4189551a2d022fa330f9573f3"),
    "t10k-labels-idx1-ubyte": (LABEL_MAGIC, 10000, "ec29112dd5afa0611ce80d1b7f02629c"),
}

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

DATA_DIR_VARIABLE = "MNIST_DIR"  # the environment variable naming MNIST's folder where no --data-dir does
DATA_DIR_HELP = f"folder with the MNIST IDX files (default: ${DATA_DIR_VARIABLE})"
HOW_TO_GET = (
    "Fetch the four MNIST files with `cvae download --data-dir DIR`, "
    f"or point --data-dir / {DATA_DIR_VARIABLE} at a folder that holds them."
)


class MnistDataError(RuntimeError):
    """A data file is missing, unreadable or not what MNIST should be."""


@dataclass(frozen=True)
class Mnist:
    """Pixels as uint8 [N, 784] and labels as int64 [N]."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def configured_data_dir(given: str | Path | None = None) -> Path | None:
    """MNIST's folder: `given` (a --data-dir flag), else $MNIST_DIR; None when neither names one.
    The one place that reads the variable."""
    found = given or os.environ.get(DATA_DIR_VARIABLE)
    return Path(found) if found else None


def data_dir(given: str | Path | None = None) -> Path:
    """MNIST's folder (configured_data_dir); MnistDataError saying how to name one when nothing does."""
    found = configured_data_dir(given)
    if found is None:
        raise MnistDataError(
            f"No MNIST directory given: pass --data-dir DIR or set {DATA_DIR_VARIABLE}. "
            "`cvae download --data-dir DIR` fetches the files."
        )
    return found


def load_mnist(data_dir: str | Path) -> Mnist:
    """Read and validate the four MNIST files in `data_dir`."""
    root = Path(data_dir)
    if not root.is_dir():
        raise MnistDataError(f"MNIST data directory {root} does not exist. {HOW_TO_GET}")
    arrays = {name: read_idx(_find(root, name), *FILES[name][:2]) for name in FILES}
    return Mnist(
        train_x=arrays["train-images-idx3-ubyte"],
        train_y=arrays["train-labels-idx1-ubyte"],
        test_x=arrays["t10k-images-idx3-ubyte"],
        test_y=arrays["t10k-labels-idx1-ubyte"],
    )


def file_checksums(data_dir: str | Path) -> dict[str, str]:
    """sha256 of each data file as found on disk, for the manifest."""
    root = Path(data_dir)
    return {path.name: _digest(path, "sha256") for path in (_find(root, n) for n in FILES)}


def _find(root: Path, name: str) -> Path:
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    raise MnistDataError(
        f"MNIST file {name}(.gz) is missing from {root}: expected the IDX file of {FILES[name][1]} items. {HOW_TO_GET}"
    )


def read_idx(path: Path, magic: int, count: int, how_to_get: str = HOW_TO_GET) -> np.ndarray:
    """The `count` images [N, 784] (uint8) or labels [N] (int64, 0..9) of the IDX file `path`, gzip or raw;
    MnistDataError, ending with `how_to_get`, when it is unreadable or not of that magic, count and size."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise MnistDataError(f"{path} cannot be read ({error}). {how_to_get}") from error
    is_images = magic == IMAGE_MAGIC
    header_size = 16 if is_images else 8
    if len(raw) < header_size:
        raise MnistDataError(f"{path} is truncated: {len(raw)} bytes. {how_to_get}")
    found_magic, found_count = struct.unpack(">II", raw[:8])
    if found_magic != magic:
        raise MnistDataError(
            f"{path} has magic number {found_magic}, expected {magic} "
            f"({'images' if is_images else 'labels'}). {how_to_get}"
        )
    if found_count != count:
        raise MnistDataError(f"{path} holds {found_count} items, expected {count}. {how_to_get}")
    if is_images:
        rows, cols = struct.unpack(">II", raw[8:16])
        if (rows, cols) != (IMAGE_SIDE, IMAGE_SIDE):
            raise MnistDataError(f"{path} holds {rows}x{cols} images, expected {IMAGE_SIDE}x{IMAGE_SIDE}. {how_to_get}")
    item_size = IMAGE_SIDE * IMAGE_SIDE if is_images else 1
    expected_bytes = header_size + count * item_size
    if len(raw) != expected_bytes:
        raise MnistDataError(f"{path} is {len(raw)} bytes once decompressed, expected {expected_bytes}. {how_to_get}")
    values = np.frombuffer(raw, dtype=np.uint8, offset=header_size)
    if is_images:
        return values.reshape(count, item_size).copy()  # [N, 784], writable
    if values.max() >= NUM_CLASSES:
        raise MnistDataError(
            f"{path} holds label {int(values.max())}, expected labels 0..{NUM_CLASSES - 1}. {how_to_get}"
        )
    return values.astype(np.int64)


def _digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(
    data_dir: str | Path,
    mirrors: tuple[str, ...] = MIRRORS,
    md5s: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> list[Path]:
    """Fetch the four .gz files into `data_dir`, trying each mirror in turn.

    Every download is checked against the canonical MD5 before it is kept;
    a file already present with the right MD5 is not fetched again, one with
    another MD5 is replaced by a download that passes. MnistDataError, once
    every file has been tried, names each file that is still not right and why.
    """
    root = Path(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    expected = md5s or {name: md5 for name, (_, _, md5) in FILES.items()}
    saved, problems = [], []
    for name, md5 in expected.items():
        target = root / f"{name}.gz"
        local = _digest(target, "md5") if target.is_file() else None
        if local == md5:
            saved.append(target)
            continue
        failures = []
        for mirror in mirrors:
            url = mirror + target.name
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    payload = response.read()
            except (urllib.error.URLError, OSError) as error:
                failures.append(f"{url}: {error}")
                continue
            got = hashlib.md5(payload).hexdigest()
            if got != md5:
                failures.append(f"{url}: MD5 {got}, expected {md5}")
                continue
            partial = target.with_suffix(".gz.part")
            partial.write_bytes(payload)
            partial.replace(target)
            saved.append(target)
            break
        else:
            tried = "; ".join(failures) or "no mirror given"
            if local is None:
                problems.append(f"Could not download {target.name} ({tried}).")
            else:
                problems.append(
                    f"{target} failed its checksum (MD5 {local}, expected {md5}: not the published file) and no "
                    f"mirror replaced it ({tried}). Delete it and run `cvae download` again (--mirror URL adds a "
                    f"mirror), or keep it if you trust it: `cvae train` reads it as it is, checking its format only."
                )
    if problems:
        raise MnistDataError(" ".join(problems))
    return saved
