"""A scoring job's output folder: its record (job.json), its Parquet parts and their schemas.

Each block's results go to `part-NNNNNN.parquet` (rows that are not images to `errors/`), written
atomically, so a rerun of the same job skips the blocks already there. A result row is an image's
/v1/classify answer flattened (service.schemas.rows.flatten): `out_of_distribution: {flagged: ...}` is the column
`out_of_distribution_flagged`, and warnings are their codes. Its schema is derived from the
service's schema of that answer (service.schemas.responses.ImageClass) by the same naming, so the
columns follow the answer wherever it changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import typing
import uuid
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from service.engine.runtime import sha256
from service.schemas.rows import columns, optional

JOB_FILE = "job.json"
KEYS = [pa.field("id", pa.string()), pa.field("row", pa.int64()), pa.field("seed", pa.int64())]  # then the answer
LEFT_OUT = {"x"}  # the answer's fields a row leaves out: the pixels scored are the input's own
ERRORS = pa.schema([("id", pa.string()), ("row", pa.int64()), ("field", pa.string()), ("reason", pa.string())])


def _arrow(kind) -> pa.DataType:
    kind = optional(kind)
    if typing.get_origin(kind) is list:
        return pa.list_(_arrow(typing.get_args(kind)[0]))
    if typing.get_origin(kind) is typing.Literal:
        return pa.string()
    return {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string()}[kind]


@cache
def results_schema() -> pa.Schema:
    """The results' columns: the row's keys, then /v1/classify's answer to one image, flattened."""
    from service.schemas.responses import ImageClass

    found = columns(ImageClass)
    return pa.schema(KEYS + [pa.field(name, _arrow(kind)) for name, kind in found.items() if name not in LEFT_OUT])


def schema_sha256() -> str:
    """The identity of the results' columns, recorded in job.json."""
    return hashlib.sha256(results_schema().to_string().encode()).hexdigest()


@dataclass(frozen=True)
class Job:
    """What a job computes; stored as job.json in the output so that a rerun can check it resumes the same job."""

    input: str
    num_rows: int
    model_dir: str
    seed: int = 0
    block_size: int = 1024
    request: dict = field(default_factory=dict)  # further /v1/classify fields: num_samples, binarize, ...
    column: str | None = None
    model_sha256: str = ""  # of the manifest, which holds the sha256 of every model file
    input_stamp: str = ""  # size and modification time of the input: a changed input is another job
    schema_sha256: str = ""  # of the results' columns: a release that answers with others is another job

    @property
    def blocks(self) -> list[tuple[int, int, int]]:
        """(block, first row, row after the last) of every block."""
        starts = range(0, self.num_rows, self.block_size)
        return [(b, s, min(s + self.block_size, self.num_rows)) for b, s in enumerate(starts)]


def model_sha256(model_dir: str | Path) -> str:
    """The model's identity: the sha256 of its manifest, which lists the sha256 of each of its files."""
    return sha256(Path(model_dir) / "manifest.json")


def input_stamp(path: str | Path) -> str:
    """Size and modification time of an input file, or of every file of an input folder."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    stamps = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return hashlib.sha256(json.dumps(stamps).encode()).hexdigest()[:16]


def part_path(out: Path, block: int, errors: bool = False) -> Path:
    return out / ("errors" if errors else "") / f"part-{block:06d}.parquet"


def write_part(table: pa.Table, path: Path) -> None:
    """Write a table so that the file either exists whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")  # unique even across nodes and retries
    pq.write_table(table, partial)
    with open(partial, "rb") as written:
        os.fsync(written.fileno())
    os.replace(partial, path)


def prepare(out: Path, job: Job) -> list[tuple[int, int, int]]:
    """Check that `out` is empty or holds this same job; the blocks still to score."""
    out.mkdir(parents=True, exist_ok=True)
    record = out / JOB_FILE
    wanted = asdict(job)
    if record.exists():
        found = json.loads(record.read_text())
        if found != wanted:
            changed = sorted(k for k in wanted if found.get(k) != wanted[k])
            raise ValueError(
                f"{out} holds the results of another job (it differs in {changed}); give another --out, "
                "or delete the folder to start again."
            )
    else:
        record.write_text(json.dumps(wanted, indent=2) + "\n")
    return [b for b in job.blocks if not part_path(out, b[0]).exists()]


def read_results(out: str | Path, errors: bool = False) -> pa.Table:
    """Every part of a job's output (or its errors) as one table, in row order; a column that a part lacks
    reads as null. Parts written by a release before the columns were named as the answer's fields
    (ood_p_value, ood_flagged, ... ; num_samples_used the total) read as they were written."""
    folder = Path(out) / ("errors" if errors else "")
    parts = sorted(folder.glob("part-*.parquet"))
    schema = ERRORS if errors else results_schema()
    if not parts:
        return schema.empty_table()
    if any(not set(pq.read_schema(p).names) <= set(schema.names) for p in parts):
        return pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default")
    return pa.concat_tables([pq.read_table(p, schema=schema) for p in parts])
