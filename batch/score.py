"""Score a data set too large for one request, on Ray Data.

The input is cut into blocks of `block_size` rows. Ray Data hands the blocks to a pool of actors
(`map_batches` with a stateful class), each holding one ONNX Runtime session of the model, which
reads its block from the input, answers every image as /v1/classify would, and writes
`part-NNNNNN.parquet` (and `errors/part-NNNNNN.parquet` for rows that are not images) into the
output folder (batch.output), atomically. A rerun skips the blocks whose part exists, so an interrupted job
resumes where it stopped and ends with the same files as an uninterrupted one.

Every image gets its own seed, derived from the job's seed and its row number, and is answered
exactly as the service answers a request holding that image alone with that seed (the `seed`
column), so any row can be checked against the service, and no answer depends on its neighbours.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from pydantic import ValidationError

from batch.output import (
    ERRORS,
    Job,
    input_stamp,
    model_sha256,
    part_path,
    prepare,
    results_schema,
    schema_sha256,
    write_part,
)
from batch.sources import Source, open_source
from service.schemas.rows import flatten

# the answer's groups a row holds: every diagnostic but the pixels scored (x), the input's own; the settings
# are the job's (job.json)
INCLUDE = ["critic", "elbo", "estimates", "ood"]


def image_seed(seed: int, row: int) -> int:
    """The seed of one image: from the job's seed and the row, below 2**63 as the API requires."""
    return int(np.random.SeedSequence(seed, spawn_key=(row,)).generate_state(1, np.uint64)[0] >> np.uint64(1))


def _as_field(image):
    """A row's image as a request field: a base64 PNG string as it is, numbers as a flat list."""
    return image if isinstance(image, str) else np.asarray(image, dtype=np.float64).reshape(-1).tolist()


class RowScorer:
    """Answers rows as the service does, in process: one model, one ONNX Runtime session."""

    def __init__(self, model_dir: str, threads: int = 1):
        from service.engine.inference import Inference
        from service.engine.scoring import Scorer

        self.inference = Inference(Scorer.open(model_dir, intra_op_threads=threads))

    def answer(self, image, seed: int, request: dict) -> dict:
        """/v1/classify's answer to `image` sent alone with `seed` and the groups of INCLUDE
        (InputError, ValidationError: not an image)."""
        from service import schemas

        body = schemas.ClassifyRequest(images=[_as_field(image)], seed=seed, include=INCLUDE, **request)
        return asyncio.run(self.inference.classify(body))["results"][0]

    def score(self, ids: list[str], images: list, first_row: int, job: Job) -> tuple[list[dict], list[dict]]:
        """Results and errors of consecutive rows starting at `first_row`."""
        from service.failures import InputError

        results, errors = [], []
        for offset, (image_id, image) in enumerate(zip(ids, images)):
            row = first_row + offset
            seed = image_seed(job.seed, row)
            try:
                answer = self.answer(image, seed, job.request)
            except InputError as error:
                errors.append({"id": image_id, "row": row, "field": error.field, "reason": error.message})
            except (ValidationError, ValueError, TypeError) as error:  # job fields were checked: it is the image
                errors.append({"id": image_id, "row": row, "field": "image", "reason": str(error).splitlines()[0]})
            else:
                results.append({"id": image_id, "row": row, "seed": seed, **flatten(answer)})
        return results, errors


class BlockScorer:
    """The Ray Data actor: reads, scores and writes whole blocks."""

    def __init__(self, job: dict, source: dict, out: str, threads: int = 1):
        self.job = Job(**job)
        self.source = Source(**source)
        self.out = Path(out)
        self.scorer = RowScorer(self.job.model_dir, threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        done = {"block": [], "rows": [], "errors": []}
        for block, start, stop in zip(batch["block"], batch["start"], batch["stop"]):
            rows = self.source.read(int(start), int(stop))
            results, errors = self.scorer.score(rows.ids, rows.images, int(start), self.job)
            write_part(pa.Table.from_pylist(errors, schema=ERRORS), part_path(self.out, int(block), errors=True))
            write_part(pa.Table.from_pylist(results, schema=results_schema()), part_path(self.out, int(block)))
            done["block"].append(int(block))
            done["rows"].append(int(stop - start))
            done["errors"].append(len(errors))
        return {key: np.asarray(values) for key, values in done.items()}


def check(job: Job) -> None:
    """Refuse a job whose settings no image could satisfy, before any row is scored."""
    from service import schemas

    if job.seed < 0 or job.block_size < 1:
        raise ValueError(f"--seed must be at least 0 and --block-size at least 1 (got {job.seed}, {job.block_size}).")
    reserved = sorted({"images", "seed", "include"} & set(job.request))
    if reserved:
        raise ValueError(f"the request fields {reserved} are set per image by the job; leave them out.")
    try:
        schemas.ClassifyRequest(images=[[0.0]], **job.request)
    except ValidationError as error:
        problem = error.errors()[0]
        raise ValueError(f"{'.'.join(map(str, problem['loc']))}: {problem['msg']}") from error


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
        schema_sha256=schema_sha256(),
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
