"""`cvae score INPUT --out OUTPUT`: score a data set on Ray Data (needs the `batch` extra)."""

from __future__ import annotations

import argparse
import json
import sys

from service.operations.versions import newest
from service.settings import SHIPPED_REPOSITORY


def build_parser(prog: str = "cvae score") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Score every image of INPUT as /v1/classify would (log p(x), p(y|x), the out-of-distribution "
        "verdict, abstention) on Ray Data, into Parquet parts under OUTPUT; rerun the same command to resume.",
    )
    parser.add_argument("input", help="MNIST IDX images file, .npy, .npz, .parquet, or a folder of PNGs")
    parser.add_argument("--out", required=True, help="output folder: part-*.parquet, errors/, job.json")
    parser.add_argument(
        "--model-dir",
        default=str(newest(SHIPPED_REPOSITORY, "mnist-cvae")),
        help="model directory (default: the newest shipped version, the one the service answers with)",
    )
    parser.add_argument("--seed", type=int, default=0, help="job seed; each image's seed derives from it and its row")
    parser.add_argument("--num-samples", type=int, help="importance samples K (default: the service's)")
    parser.add_argument("--binarize", choices=("threshold", "bernoulli", "none"), help="default: the service's")
    parser.add_argument("--column", help="the image column of a Parquet file or array of an .npz")
    parser.add_argument("--block-size", type=int, default=1024, help="rows per block and output part (default 1024)")
    parser.add_argument("--workers", type=int, help="scoring actors (default: CPUs / threads)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per actor (default 1)")
    parser.add_argument(
        "--address", help="an existing Ray cluster, e.g. 10.0.0.5:6379 (default: Ray starts in this process)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None, prog: str = "cvae score") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        import ray  # noqa: F401
        import tqdm  # noqa: F401
    except ImportError as error:
        print(f"{prog} needs the batch extra ({error}): pip install -e '.[batch]'", file=sys.stderr)
        return 2
    from batch.score import run
    from batch.sources import SourceError

    fields = (("num_samples", args.num_samples), ("binarize", args.binarize))
    request = {key: value for key, value in fields if value is not None}
    try:
        summary = run(
            args.input,
            args.out,
            args.model_dir,
            seed=args.seed,
            workers=args.workers,
            threads=args.threads,
            block_size=args.block_size,
            address=args.address,
            column=args.column,
            request=request,
            progress=not args.no_progress,
        )
    except (SourceError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rates = {
        "images_per_second": round(summary.images_per_second, 1),
        "warm_images_per_second": round(summary.warm_images_per_second, 1),  # after every worker's first block
    }
    print(json.dumps({**vars(summary), **rates}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
