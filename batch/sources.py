"""Where a batch job's images come from: every format read by row ranges, so that a block of rows
can be read by whichever worker scores it, and a million images never sit in memory at once.

Formats (by the input's name):
- MNIST IDX image files (`*-idx3-ubyte`, optionally `.gz`): ids are row numbers;
- NumPy `.npy` ([N, 784] or [N, 28, 28], 0-255 integers or [0, 1] floats; read memory-mapped) and
  `.npz` (its `--column` array, else the only one, or `x`, `images`): ids are row numbers;
- Parquet: a column (`--column`, default `image`, `images`, `pixels` or `x`) of 784 numbers or of PNG
  bytes; ids come from an `id` column when there is one, else row numbers;
- a folder of `.png` files (searched recursively, in sorted order): ids are the paths inside it.

A row that cannot be an image (a PNG that does not decode, a wrong number of pixels) is still a
row: the scorer reports it in the errors file and goes on.
"""

from __future__ import annotations

import base64
import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COLUMNS = ("image", "images", "pixels", "x")
NPZ_KEYS = ("x", "images", "image", "pixels")


class SourceError(ValueError):
    """The input cannot be read as a whole (missing, unknown format, no image column)."""


@dataclass(frozen=True)
class Rows:
    """One block of rows: ids, and per row a list/array of pixels or a base64 PNG string."""

    ids: list[str]
    images: list


@dataclass(frozen=True)
class Source:
    """An input: its kind, path and size; `read(start, stop)` gives a block of rows."""

    kind: str
    path: str
    num_rows: int
    column: str | None = None

    def read(self, start: int, stop: int) -> Rows:
        return READERS[self.kind](self, start, stop)


def open_source(path: str | Path, column: str | None = None) -> Source:
    """The Source for `path`, after checking it can be read."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path} does not exist: give an IDX, .npy, .npz or Parquet file, or a folder of PNGs.")
    if path.is_dir():
        return Source("png_folder", str(path), len(_png_files(path)))
    name = path.name
    if "idx3-ubyte" in name:
        return Source("idx", str(path), _idx_header(path)[0])
    if name.endswith(".npy"):
        return Source("npy", str(path), len(np.load(path, mmap_mode="r")))
    if name.endswith(".npz"):
        with np.load(path) as archive:
            key = _npz_key(archive.files, column, path)
            return Source("npz", str(path), len(archive[key]), key)
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
        found = column or next((c for c in COLUMNS if c in schema.names), None)
        if found is None or found not in schema.names:
            raise SourceError(f"{path} has columns {schema.names}; name the image column with --column.")
        return Source("parquet", str(path), pq.ParquetFile(path).metadata.num_rows, found)
    raise SourceError(f"{path}: unknown format; give an IDX (*-idx3-ubyte[.gz]), .npy, .npz or .parquet file.")


def _npz_key(files: list[str], column: str | None, path: Path) -> str:
    if column:
        if column not in files:
            raise SourceError(f"{path} has arrays {files}, not {column!r}.")
        return column
    if len(files) == 1:
        return files[0]
    found = next((k for k in NPZ_KEYS if k in files), None)
    if found is None:
        raise SourceError(f"{path} has arrays {files}; name the images with --column.")
    return found


def _png_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() == ".png" and p.is_file())


def _idx_header(path: Path) -> tuple[int, int, int]:
    """(count, rows, cols) of an IDX image file."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        header = f.read(16)
    if len(header) < 16 or struct.unpack(">I", header[:4])[0] != 2051:
        raise SourceError(f"{path} is not an IDX image file (magic number 2051).")
    return struct.unpack(">III", header[4:16])


def _numbered(start: int, stop: int) -> list[str]:
    return [str(i) for i in range(start, stop)]


def _read_idx(source: Source, start: int, stop: int) -> Rows:
    path = Path(source.path)
    count, rows, cols = _idx_header(path)
    size = rows * cols
    if path.name.endswith(".gz"):  # a compressed stream: read up to the block (MNIST-sized files)
        with gzip.open(path, "rb") as f:
            f.seek(16 + start * size)
            raw = f.read((stop - start) * size)
        pixels = np.frombuffer(raw, dtype=np.uint8).reshape(-1, size)
    else:
        pixels = np.memmap(path, dtype=np.uint8, mode="r", offset=16, shape=(count, size))[start:stop]
    return Rows(_numbered(start, stop), list(np.asarray(pixels)))


def _read_npy(source: Source, start: int, stop: int) -> Rows:
    array = np.load(source.path, mmap_mode="r")[start:stop]
    return Rows(_numbered(start, stop), list(np.asarray(array).reshape(stop - start, -1)))


def _read_npz(source: Source, start: int, stop: int) -> Rows:
    with np.load(source.path) as archive:
        array = archive[source.column][start:stop]
    return Rows(_numbered(start, stop), list(np.asarray(array).reshape(stop - start, -1)))


def _read_parquet(source: Source, start: int, stop: int) -> Rows:
    import pyarrow.parquet as pq

    file = pq.ParquetFile(source.path)
    names = file.schema_arrow.names
    columns = [source.column] + (["id"] if "id" in names else [])
    table = _row_range(file, columns, start, stop)
    values = table.column(source.column).to_pylist()
    images = [base64.b64encode(v).decode() if isinstance(v, bytes | bytearray) else v for v in values]
    ids = [str(v) for v in table.column("id").to_pylist()] if "id" in names else _numbered(start, stop)
    return Rows(ids, images)


def _row_range(file, columns: list[str], start: int, stop: int):
    """Rows [start, stop) of a Parquet file, reading only the row groups that hold them."""
    import pyarrow as pa

    tables, offset = [], 0
    for group in range(file.num_row_groups):
        size = file.metadata.row_group(group).num_rows
        if offset < stop and offset + size > start:
            table = file.read_row_group(group, columns=columns)
            tables.append(table.slice(max(0, start - offset), min(stop, offset + size) - max(start, offset)))
        offset += size
    return pa.concat_tables(tables)


def _read_png_folder(source: Source, start: int, stop: int) -> Rows:
    folder = Path(source.path)
    files = _png_files(folder)[start:stop]
    ids = [str(p.relative_to(folder)) for p in files]
    return Rows(ids, [base64.b64encode(p.read_bytes()).decode() for p in files])


READERS = {
    "idx": _read_idx,
    "npy": _read_npy,
    "npz": _read_npz,
    "parquet": _read_parquet,
    "png_folder": _read_png_folder,
}
