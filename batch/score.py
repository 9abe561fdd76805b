"""Score a data set too large for one request, on Ray Data.

The input is cut into blocks of `block_size` rows. Ray Data hands the blocks to a pool of actors
(`map_batches` with a stateful class), each holding one ONNX Runtime session of the model, which
reads its block from the input, answers every image as /v1/classify would, and writes
`part-NNNNNN.parquet` (and `errors/part-NNNNNN.parquet` for rows that are not images) into the
output folder, atomically. A rerun skips the blocks whose part exists, so an interrupted job
resumes where it stopped and ends with the same files as an uninterrupted one.

Every image gets its own seed, derived from the job's seed and its row number, and is answered
exactly as the service answers a request holding that image alone with that seed (the `seed`
column), so any row can be checked against the service, and no answer depends on its neighbours.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from batch.sources import Source, open_source

JOB_FILE = "job.json"
RESULTS = pa.schema(
    [
        ("id", pa.string()),
        ("row", pa.int64()),
        ("seed", pa.int64()),
        ("predicted", pa.int64()),
        ("probability", pa.float64()),
        ("entropy", pa.float64()),
        ("probs", pa.list_(pa.float64())),
        ("log_px", pa.float64()),
        ("log_px_std_error", pa.float64()),
        ("log_px_reliable", pa.bool_()),
        ("ood_score", pa.float64()),
        ("ood_p_value", pa.float64()),
        ("ood_flagged", pa.bool_()),
        ("abstained", pa.bool_()),
        ("abstain_reasons", pa.list_(pa.string())),
        ("critic_probs", pa.list_(pa.float64())),  # null when the model has no critic's digit output
        ("warnings", pa.list_(pa.string())),
        ("num_samples_used", pa.int64()),
    ]
)
ERRORS = pa.schema([("id", pa.string()), ("row", pa.int64()), ("field", pa.string()), ("reason", pa.string())])


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

    @property
    def blocks(self) -> list[tuple[int, int, int]]:
        """(block, first row, row after the last) of every block."""
        starts = range(0, self.num_rows, self.block_size)
        return [(b, s, min(s + self.block_size, self.num_rows)) for b, s in enumerate(starts)]


def model_sha256(model_dir: str | Path) -> str:
    """The model's identity: the sha256 of its manifest, which lists the sha256 of each of its files."""
    return hashlib.sha256((Path(model_dir) / "manifest.json").read_bytes()).hexdigest()


def input_stamp(path: str | Path) -> str:
    """Size and modification time of an input file, or of every file of an input folder."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    stamps = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return hashlib.sha256(json.dumps(stamps).encode()).hexdigest()[:16]


def image_seed(seed: int, row: int) -> int:
    """The seed of one image: from the job's seed and the row, below 2**63 as the API requires."""
    return int(np.random.SeedSequence(seed, spawn_key=(row,)).generate_state(1, np.uint64)[0] >> np.uint64(1))


def part_path(out: Path, block: int, errors: bool = False) -> Path:
    return out / ("errors" if errors else "") / f"part-{block:06d}.parquet"


def _write(table: pa.Table, path: Path) -> None:
    """Write a table so that the file either exists whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")  # unique even across nodes and retries
    pq.write_table(table, partial)
    with open(partial, "rb") as written:
        os.fsync(written.fileno())
    os.replace(partial, path)


def _record(image_id: str, row: int, seed: int, scores, warnings: list[dict]) -> dict:
    """One row of the results from the scores (service.scoring.Scores) of one image."""
    from service.abstention import REASONS
    from service.answers import number

    verdicts, bayes = scores.verdicts, scores.bayes
    return {
        "id": image_id,
        "row": row,
        "seed": seed,
        "predicted": int(scores.predicted[0]),
        "probability": float(scores.probs[0].max()),
        "entropy": float(scores.entropy[0]),
        "probs": scores.probs[0].tolist(),
        "log_px": number(bayes.log_px[0]),
        "log_px_std_error": number(bayes.log_px_std_error[0]),
        "log_px_reliable": bool(bayes.reliable[0]),
        "ood_score": number(verdicts.score[0]) if verdicts else None,
        "ood_p_value": float(verdicts.p_value[0]) if verdicts else None,
        "ood_flagged": bool(verdicts.flagged[0]) if verdicts else None,
        "abstained": bool(scores.abstained[0]),
        "abstain_reasons": [name for name, holds in zip(REASONS, scores.abstain[0]) if holds],
        "critic_probs": scores.critic_probs[0].tolist() if scores.critic_probs is not None else None,
        "warnings": [w["code"] for w in warnings],
        "num_samples_used": int(scores.samples_used[0]),
    }


def _as_field(image):
    """A row's image as a request field: a base64 PNG string as it is, numbers as a flat list."""
    return image if isinstance(image, str) else np.asarray(image, dtype=np.float64).reshape(-1).tolist()


class Scorer:
    """Answers rows as the service does, in process: one model, one ONNX Runtime session."""

    def __init__(self, model_dir: str, threads: int = 1):
        from service.inference import Inference
        from service.scoring import Scorer

        self.inference = Inference(Scorer.open(model_dir, intra_op_threads=threads, inter_op_threads=1))

    def answer(self, image, seed: int, request: dict) -> tuple:
        """The scores (service.scoring.Scores) and warnings of one image sent alone to /v1/classify with
        `seed` (InputError, ValidationError: not an image)."""
        from service import schemas

        body = schemas.ClassifyRequest(images=[_as_field(image)], seed=seed, **request)
        scores, _, warnings = asyncio.run(self.inference.scores(body, classify=True))
        return scores, warnings[0]

    def score(self, ids: list[str], images: list, first_row: int, job: Job) -> tuple[list[dict], list[dict]]:
        """Results and errors of consecutive rows starting at `first_row`."""
        from service.images import InputError

        results, errors = [], []
        for offset, (image_id, image) in enumerate(zip(ids, images)):
            row = first_row + offset
            seed = image_seed(job.seed, row)
            try:
                results.append(_record(image_id, row, seed, *self.answer(image, seed, job.request)))
            except InputError as error:
                errors.append({"id": image_id, "row": row, "field": error.field, "reason": error.message})
            except (ValidationError, ValueError, TypeError) as error:  # job fields were checked: it is the image
                errors.append({"id": image_id, "row": row, "field": "image", "reason": str(error).splitlines()[0]})
        return results, errors


class BlockScorer:
    """The Ray Data actor: reads, scores and writes whole blocks."""

    def __init__(self, job: dict, source: dict, out: str, threads: int = 1):
        self.job = Job(**job)
        self.source = Source(**source)
        self.out = Path(out)
        self.scorer = Scorer(self.job.model_dir, threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        done = {"block": [], "rows": [], "errors": []}
        for block, start, stop in zip(batch["block"], batch["start"], batch["stop"]):
            rows = self.source.read(int(start), int(stop))
            results, errors = self.scorer.score(rows.ids, rows.images, int(start), self.job)
            _write(pa.Table.from_pylist(errors, schema=ERRORS), part_path(self.out, int(block), errors=True))
            _write(pa.Table.from_pylist(results, schema=RESULTS), part_path(self.out, int(block)))
            done["block"].append(int(block))
            done["rows"].append(int(stop - start))
            done["errors"].append(len(errors))
        return {key: np.asarray(values) for key, values in done.items()}


def check(job: Job) -> None:
    """Refuse a job whose settings no image could satisfy, before any row is scored."""
    from service import schemas

    if job.seed < 0 or job.block_size < 1:
        raise ValueError(f"--seed must be at least 0 and --block-size at least 1 (got {job.seed}, {job.block_size}).")
    reserved = sorted({"images", "seed"} & set(job.request))
    if reserved:
        raise ValueError(f"the request fields {reserved} are set per image by the job; leave them out.")
    try:
        schemas.ClassifyRequest(images=[[0.0]], **job.request)
    except ValidationError as error:
        problem = error.errors()[0]
        raise ValueError(f"{'.'.join(map(str, problem['loc']))}: {problem['msg']}") from error


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


@dataclass
class Summary:
    rows: int
    errors: int
    blocks: int
    skipped_blocks: int
    seconds: float
    # after start-up: the rows finished after the first block of every worker, and the seconds since
    # then (Ray's start, the actors' model loading and their first block left out)
    warm_rows: int = 0
    warm_seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    @property
    def warm_images_per_second(self) -> float:
        return self.warm_rows / self.warm_seconds if self.warm_seconds else 0.0


def run(
    input_path: str | Path,
    out: str | Path,
    model_dir: str | Path,
    seed: int = 0,
    workers: int | None = None,
    threads: int = 1,
    block_size: int = 1024,
    address: str | None = None,
    column: str | None = None,
    request: dict | None = None,
    progress: bool = True,
) -> Summary:
    """Score every image of `input_path` into `out` (see the module's docstring)."""
    import ray

    source = open_source(input_path, column)
    job = Job(
        input=str(Path(input_path).resolve()),
        num_rows=source.num_rows,
        model_dir=str(Path(model_dir).resolve()),
        seed=seed,
        block_size=block_size,
        request=dict(request or {}),
        column=source.column,
        model_sha256=model_sha256(model_dir),
        input_stamp=input_stamp(input_path),
    )
    out = Path(out).resolve()
    check(job)
    pending = prepare(out, job)
    workers = workers or max(1, (os.cpu_count() or 1) // threads)
    started = time.perf_counter()
    summary = Summary(0, 0, len(job.blocks), len(job.blocks) - len(pending), 0.0)
    if pending:
        if not ray.is_initialized():
            # without an address, a Ray of this process alone ("local"), even where a cluster runs on the machine
            where = {"address": address} if address else {"address": "local", "num_cpus": workers * threads}
            ray.init(include_dashboard=False, log_to_driver=False, **where)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        items = [{"block": b, "start": s, "stop": e} for b, s, e in pending]
        blocks = ray.data.from_items(items, override_num_blocks=len(items))
        scored = blocks.map_batches(
            BlockScorer,
            fn_constructor_kwargs={"job": asdict(job), "source": asdict(source), "out": str(out), "threads": threads},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=threads,
        )
        bar = _progress(sum(e - s for _, s, e in pending), progress)
        warm_from, finished = None, 0
        for done in scored.iter_batches(batch_size=1):
            rows = int(done["rows"].sum())
            summary.rows += rows
            summary.errors += int(done["errors"].sum())
            bar.update(rows)
            finished += len(done["rows"])
            if warm_from is not None:
                summary.warm_rows += rows
            elif finished >= workers:
                warm_from = time.perf_counter()
        bar.close()
        if warm_from is not None:
            summary.warm_seconds = time.perf_counter() - warm_from
    summary.seconds = time.perf_counter() - started
    return summary


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", disable=not enabled, desc="scoring", smoothing=0.1)


def read_results(out: str | Path, errors: bool = False) -> pa.Table:
    """Every part of a job's output (or its errors) as one table, in row order; a column that a part
    written by an earlier release lacks (critic_probs) reads as null."""
    folder = Path(out) / ("errors" if errors else "")
    parts = sorted(folder.glob("part-*.parquet"))
    schema = ERRORS if errors else RESULTS
    tables = [pq.read_table(p, schema=schema) for p in parts]
    return pa.concat_tables(tables) if tables else schema.empty_table()
