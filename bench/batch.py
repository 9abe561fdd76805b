"""The batch scoring benchmark: what Ray Data costs next to scoring in process, how it scales, and
how much memory a large input takes.

    python -m bench.batch [--data-dir DIR] [--images 2000] [--memory-images 1000000] [--num-samples N]

Side by side in one run, on the first `--images` MNIST test digits (as a .npy file), at the
service's default settings unless `--num-samples` says otherwise:

- in process: one ONNX Runtime session with 2 intra-op threads scoring every image in a loop
  (batch.score.RowScorer, the code each Ray actor runs), both cores busy;
- Ray: `cvae score`'s run() with 2 actors of 1 thread each, timed over the whole job (Ray's start
  included) and after start-up (from the end of every actor's first block);
- scaling: Ray with 1 actor of 1 thread against 2 actors of 1 thread, both ways.

`--images 0` leaves the throughput runs out (a memory run alone).

Memory: `--memory-images` images made from the test digits by repetition (a memory-mapped .npy),
streamed through run() with a cheap setting (K = 2, no screening) so that the run takes minutes;
the peak is the largest sum, over the job's processes (this one and every process under it: Ray's
raylet, object store and actors), of their proportional set size (PSS: shared pages split
between the processes that map them), sampled every 0.5 s.

Writes bench/results/batch.json and BATCH.md, and prints the markdown.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from bench.common import arguments, grey_test_digits, save
from training.data import MnistDataError


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


class PeakMemory:
    """The largest total PSS of this process and its descendants, sampled in a thread."""

    def __init__(self, interval: float = 0.5):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    total += process.memory_full_info().pss
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def memory(model_dir: str, digits: np.ndarray, count: int, folder: Path) -> dict:
    path = folder / "large.npy"
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(count, 784))
    for start in range(0, count, len(digits)):
        array[start : start + len(digits)] = digits[: count - start]
    array.flush()
    del array
    request = {"num_samples": 2, "adaptive": False}
    with PeakMemory() as peak:
        summary = _run(path, folder / "out", model_dir, workers=2, request=request, block_size=4096)
    return {
        "images": count,
        "input_bytes": path.stat().st_size,
        "peak_pss_bytes": peak.peak,
        "images_per_second": summary.images_per_second,
        "errors": summary.errors,
        "request": request,
    }


def markdown(report: dict) -> str:
    t, m = report.get("throughput"), report.get("memory")
    lines = [f"Machine: {report['cpu_count']} CPUs; model `{report['model_dir']}`."]
    if t:
        base = t["in_process"]
        two, one = t["ray_2x1"], t["ray_1x1"]
        lines += [
            "",
            f"Throughput on {report['images']} MNIST test digits; request fields "
            f"{report['request'] or 'the service defaults'}. Whole job: Ray's start, the actors' model loading "
            "and the last straggling block included; after start-up: from the end of every actor's first block.",
            "",
            "| run | images/s, whole job | ratio | images/s, after start-up | ratio |",
            "|---|---|---|---|---|",
            *[
                f"| {run} | {r['whole']:.1f} | {r['whole'] / base:.2f} | {r['warm']:.1f} | {r['warm'] / base:.2f} |"
                for run, r in (
                    ("in process, 1 session x 2 threads", {"whole": base, "warm": base}),
                    ("Ray Data, 2 actors x 1 thread", two),
                    ("Ray Data, 1 actor x 1 thread", one),
                )
            ],
            "",
            f"Scaling, 2 actors over 1: {two['whole'] / one['whole']:.2f}x over the whole job, "
            f"{two['warm'] / one['warm']:.2f}x after start-up.",
        ]
    if m:
        lines += [
            "",
            f"Memory: {m['images']} images ({m['input_bytes'] / 2**20:.0f} MiB memory-mapped .npy), "
            f"request {m['request']}: "
            f"peak PSS of all the job's processes {m['peak_pss_bytes'] / 2**30:.2f} GiB, "
            f"{m['images_per_second']:.0f} images/s, {m['errors']} errors.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    parser.add_argument("--images", type=int, default=2000, help="digits for the throughput runs (0: none)")
    parser.add_argument("--num-samples", type=int, help="K for the throughput runs (default: the service's)")
    parser.add_argument("--memory-images", type=int, default=0, help="images for the memory run (0: none)")
    args = parser.parse_args(argv)

    try:
        grey, _ = grey_test_digits(min(max(args.images, 1000), 10000), args.data_dir)
    except MnistDataError as error:
        parser.error(str(error))
    digits = np.round(255 * grey).astype(np.uint8)
    request = {"num_samples": args.num_samples} if args.num_samples else {}
    report = {"cpu_count": os.cpu_count(), "model_dir": args.model_dir}
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
    save(args.out, "batch", report, markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
