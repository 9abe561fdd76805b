"""The batch scoring benchmark: what Ray Data costs next to scoring in process, how it scales, and
how much memory a large input takes. Writes bench/results/batch.json and BATCH.md.

    python -m bench.batch [--data-dir DIR] [--images 2000] [--memory-images 1000000] [--num-samples N]

Throughput on the first `--images` MNIST test digits (a .npy file; 0: none), at the service's default
settings unless `--num-samples` says otherwise: one RowScorer in process (the code each Ray actor runs)
with 2 intra-op threads, against `cvae score`'s run() with 2 actors of 1 thread and with 1 (scaling),
over the whole job (Ray's start included) and after start-up (from the end of every actor's first block).
Memory: `--memory-images` images repeated from the test digits (a memory-mapped .npy) through run() at
K = 2 without screening; the peak of the summed proportional set size (PSS: shared pages split between
the processes that map them) of this process and every process under it, sampled every 0.5 s.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from bench.common import arguments, benchmark, document, mnist_digits, table


def in_process(model_dir: str, images: np.ndarray, request: dict) -> float:
    """Images per second of one RowScorer with 2 threads, scoring every image in a loop."""
    from batch.output import Job
    from batch.score import RowScorer

    scorer = RowScorer(model_dir, threads=2)
    job = Job(input="", num_rows=len(images), model_dir=model_dir, request=request)
    started = time.perf_counter()
    results, errors = scorer.score([str(i) for i in range(len(images))], list(images), 0, job)
    assert not errors and len(results) == len(images)
    return len(images) / (time.perf_counter() - started)


def _run(path: Path, out: Path, model_dir: str, **options):
    """`cvae score`'s run() with actors of one thread and `options`, then Ray shut down; its summary."""
    import ray

    from batch.score import run

    try:
        return run(path, out, model_dir, threads=1, progress=False, **options)
    finally:
        ray.shutdown()


def with_ray(path: Path, model_dir: str, workers: int, request: dict, block_size: int) -> dict:
    """Images per second of a run() with `workers` actors of one thread: the whole job (Ray started
    and stopped) and after start-up (from the end of every actor's first block)."""
    with tempfile.TemporaryDirectory(prefix="bench-batch-", ignore_cleanup_errors=True) as out:
        summary = _run(path, Path(out), model_dir, workers=workers, request=request, block_size=block_size)
    return {"whole": summary.images_per_second, "warm": summary.warm_images_per_second}


@contextlib.contextmanager
def peak_memory(interval: float = 0.5):
    """Samples, in a thread while the block runs, the total PSS of this process and its descendants; yields a
    dict whose "bytes" is the largest so far."""
    peak, stop, me = {"bytes": 0}, threading.Event(), psutil.Process()

    def sample() -> None:
        while not stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    total += process.memory_full_info().pss
            peak["bytes"] = max(peak["bytes"], total)
            stop.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


def memory(model_dir: str, digits: np.ndarray, count: int, folder: Path) -> dict:
    path = folder / "large.npy"
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(count, 784))
    for start in range(0, count, len(digits)):
        array[start : start + len(digits)] = digits[: count - start]
    array.flush()
    del array
    request = {"num_samples": 2, "adaptive": False}
    with peak_memory() as peak:
        summary = _run(path, folder / "out", model_dir, workers=2, request=request, block_size=4096)
    return {
        "images": count,
        "input_bytes": path.stat().st_size,
        "peak_pss_bytes": peak["bytes"],
        "images_per_second": summary.images_per_second,
        "errors": summary.errors,
        "request": request,
    }


def markdown(report: dict) -> str:
    t, m = report.get("throughput"), report.get("memory")
    blocks = [f"Machine: {report['cpu_count']} CPUs; model `{report['model_dir']}`."]
    if t:
        base, two, one = t["in_process"], t["ray_2x1"], t["ray_1x1"]
        runs = {"in process, 1 session x 2 threads": {"whole": base, "warm": base}}
        runs |= {"Ray Data, 2 actors x 1 thread": two, "Ray Data, 1 actor x 1 thread": one}
        pair = lambda rate: [f"{rate:.1f}", f"{rate / base:.2f}"]  # noqa: E731 (images/s, and its ratio)
        rows = [[run, *pair(r["whole"]), *pair(r["warm"])] for run, r in runs.items()]
        blocks += [
            f"Throughput on {report['images']} MNIST test digits; request fields "
            f"{report['request'] or 'the service defaults'}. Whole job: Ray's start, the actors' model loading "
            "and the last straggling block included; after start-up: from the end of every actor's first block.",
            table(["run", "images/s, whole job", "ratio", "images/s, after start-up", "ratio"], rows),
            f"Scaling, 2 actors over 1: {two['whole'] / one['whole']:.2f}x over the whole job, "
            f"{two['warm'] / one['warm']:.2f}x after start-up.",
        ]
    if m:
        blocks.append(
            f"Memory: {m['images']} images ({m['input_bytes'] / 2**20:.0f} MiB memory-mapped .npy), request "
            f"{m['request']}: peak PSS of all the job's processes {m['peak_pss_bytes'] / 2**30:.2f} GiB, "
            f"{m['images_per_second']:.0f} images/s, {m['errors']} errors."
        )
    return document(*blocks)


def measure(args) -> dict:
    digits, _ = mnist_digits(min(max(args.images, 1000), 10000), args.data_dir, "pixels")
    request = {"num_samples": args.num_samples} if args.num_samples else {}
    report = {}
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as folder:
        if args.images:
            digits = digits[: args.images]
            path = Path(folder) / "digits.npy"
            np.save(path, digits)
            block = max(16, len(digits) // 32)
            report |= {"images": len(digits), "request": request}
            report["throughput"] = {
                "in_process": in_process(args.model_dir, digits, request),
                "ray_2x1": with_ray(path, args.model_dir, 2, request, block),
                "ray_1x1": with_ray(path, args.model_dir, 1, request, block),
            }
        if args.memory_images:
            report["memory"] = memory(args.model_dir, digits, args.memory_images, Path(folder))
    return report


def main(argv: list[str] | None = None) -> None:
    parser = arguments(
        "bench.batch",
        __doc__,
        images=(2000, "digits for the throughput runs (0: none)"),
        num_samples=(int, "K for the throughput runs (default: the service's)"),
        memory_images=(0, "images for the memory run (0: none)"),
    )
    benchmark(parser, argv, "batch", measure, markdown)


if __name__ == "__main__":
    raise SystemExit(main())
