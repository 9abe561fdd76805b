"""The benchmark: every figure side by side from one run on one machine.

    python -m bench.run [--duration 3] [--rounds 3] [--num-samples 100] [--out bench/results]

1. limits: numpy float32 matmul rate, and ONNX Runtime in-process on the scoring workload;
2. the service over HTTP per endpoint at concurrency 1, 8, 32, 64 (dynamic batching on);
3. the same with dynamic batching off;
4. peers on the same model and workload: LitServe with its batching (classify), and
   FastAPI + PyTorch eager, one request at a time (every endpoint);
5. adaptive scoring against exhaustive: speed ratio and the difference in nats.
Servers run one at a time, never side by side on the shared cores. Every round starts each
server in turn and sweeps its cells, so drift in the machine's speed spreads over all of them;
each figure is the median of its rounds, and the two head-to-head targets also list every
round's own ratio. Writes RESULTS.md, results.json and throughput.png into --out and prints
the markdown.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import arguments, binary_test_digits, free_port, server, service
from bench.load import CONCURRENCY, LoadResult, run_load
from service.engine import estimator
from service.engine.scoring import Scorer
from training.data import DATA_DIR_HELP, configured_data_dir
from training.screening import score as in_process_scoring


def matmul_gflops(seconds: float = 3.0, n: int = 1024) -> float:
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - started) / 1e9


def scoring_flops_per_image(manifest: dict, k: int) -> float:
    """Multiply-adds x 2 of the scorer's dense layers for one image: every class, K decoder passes."""
    cfg = manifest["model_config"]
    x_dim = cfg["image_shape"][0] * cfg["image_shape"][1]
    c, d, hidden = cfg["num_classes"], cfg["latent_dim"], list(cfg["hidden_dims"])
    encoder = list(zip([x_dim, *hidden], [*hidden, 2 * d]))
    decoder = list(zip([d, *reversed(hidden)], [*reversed(hidden), x_dim]))
    macs = lambda layers: sum((i + c) * o for i, o in layers)  # noqa: E731 (+ c: the one-hot class input)
    return 2.0 * c * (macs(encoder) + k * macs(decoder))


def test_images(limit: int, model, data_dir: str | None = None) -> np.ndarray:
    """The first `limit` MNIST test images, binarized as the model card's are, when `data_dir` or
    $MNIST_DIR names MNIST's folder; else binary samples of the model."""
    if configured_data_dir(data_dir) is not None:
        return binary_test_digits(limit, data_dir)[0]
    rng = np.random.default_rng(0)
    y = rng.integers(0, model.num_classes, limit)
    logits = model.decode(rng.standard_normal((limit, model.latent_dim)), y)
    return (rng.random(logits.shape) < 1 / (1 + np.exp(-logits))).astype(np.float32)


def workloads(images: np.ndarray, k: int) -> dict:
    """name -> (method, path, body(i), images per request)."""
    one = lambda i: images[i % len(images)].tolist()  # noqa: E731
    scored = lambda **extra: lambda i: {"images": [one(i)], "num_samples": k, "seed": i, **extra}  # noqa: E731
    return {
        "samples": ("POST", "/v1/samples", lambda i: {"n": 1, "seed": i}, 1),
        "encode": ("POST", "/v1/encode", lambda i: {"images": [one(i)]}, 1),
        "log-likelihood": ("POST", "/v1/log-likelihood", scored(), 1),
        "classify": ("POST", "/v1/classify", scored(), 1),
        "classify (exhaustive)": ("POST", "/v1/classify", scored(adaptive=False), 1),
    }


def sweep(base: str, loads: dict, names: list[str], duration: float) -> dict[tuple[str, int], LoadResult]:
    results = {}
    for name in names:
        method, path, body, per = loads[name]
        run_load(base, method, path, body, per, 4, 1.0)  # warm-up
        for c in CONCURRENCY:
            r = results[(name, c)] = run_load(base, method, path, body, per, c, duration)
            print(
                f"  {name:>22} c={c:<3} {r.images_per_second:8.1f} img/s  p50 {r.percentile(50):7.1f} ms  "
                f"p99 {r.percentile(99):7.1f} ms  errors {r.errors}",
                flush=True,
            )
    return results


def median_run(runs: list[LoadResult]) -> LoadResult:
    """The run of median throughput (the lower middle one for an even count), latencies and all."""
    return sorted(runs, key=lambda r: r.images_per_second)[(len(runs) - 1) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = arguments(
        __doc__.split("\n\n")[0], "bench/results", DATA_DIR_HELP + "; with neither, binary samples of the model"
    )
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per load cell (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over every server; each cell its median")
    parser.add_argument("--num-samples", type=int, default=100, help="K of the scoring workloads (default %(default)s)")
    parser.add_argument("--large-batch", type=int, default=64, help="images per large scoring request")
    parser.add_argument("--adaptive-images", type=int, default=10000, help="test images for section 5 (all of them)")
    parser.add_argument("--adaptive-samples", type=int, default=1000, help="K for section 5")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    k = args.num_samples
    scorer = Scorer.open(args.model_dir)  # the declared defaults, never the CVAE_* environment
    model, screening = scorer.model, scorer.screening
    images = test_images(max(args.large_batch, args.adaptive_images), model, args.data_dir)
    report: dict = {"num_samples": k, "duration": args.duration, "cpu_count": os.cpu_count()}
    report |= {"large_batch": args.large_batch, "rounds": args.rounds}

    loads = workloads(images, k)
    batch = images[: args.large_batch]
    large_body = {"images": batch.tolist(), "num_samples": k, "adaptive": False, "seed": 0}
    lit_loads = {"classify (exhaustive)": ("POST", "/predict", loads["classify (exhaustive)"][2], 1)}

    def own(batching: str):  # the service, on a free port
        limits = {"CVAE_MAX_BODY_BYTES": str(64_000_000), "CVAE_MAX_WORK": str(10**8)}
        return lambda: service({"CVAE_MODEL_DIR": args.model_dir, "CVAE_BATCHING": batching, **limits})

    def peer(module: str, ready: str, *extra: str):  # a peer of bench.peers, on a free port
        def start():
            port = free_port()
            return server([sys.executable, "-m", module, args.model_dir, str(port), *extra], port, ready)

        return start

    servers = {  # label -> (start() -> a context yielding the base URL, workloads, names)
        "batching on": (own("true"), loads, list(loads)),
        "batching off": (own("false"), loads, list(loads)),
        "torch": (peer("bench.peers.torch_peer", "/readyz"), loads, [n for n in loads if n != "classify"]),
        "litserve": (peer("bench.peers.litserve_peer", "/health", "32", "0.005"), lit_loads, list(lit_loads)),
    }
    runs: dict[str, dict[tuple[str, int], list[LoadResult]]] = {label: {} for label in servers}
    limits: dict[str, list[float]] = {
        key: [] for key in ("matmul_gflops", "ort_images_per_s", "ort_adaptive_images_per_s", "http_large_images_per_s")
    }
    report["matmul_gflops_per_image"] = scoring_flops_per_image(model.manifest, k) / 1e9
    in_process_scoring(model, batch[:4], k)  # warm-up
    for round_ in range(1, args.rounds + 1):
        print(f"round {round_} of {args.rounds}\n1. limits", flush=True)
        limits["matmul_gflops"].append(matmul_gflops())
        limits["ort_images_per_s"].append(len(batch) / in_process_scoring(model, batch, k)[1])
        limits["ort_adaptive_images_per_s"].append(len(batch) / in_process_scoring(model, batch, k, screening)[1])
        print(
            f"  numpy matmul {limits['matmul_gflops'][-1]:.1f} GFLOP/s; "
            f"ORT scoring {limits['ort_images_per_s'][-1]:.1f} img/s exhaustive, "
            f"{limits['ort_adaptive_images_per_s'][-1]:.1f} img/s adaptive",
            flush=True,
        )
        for label, (start, workload, names) in servers.items():
            print(f"2-4. {label}", flush=True)
            with start() as base:
                for key, result in sweep(base, workload, names, args.duration).items():
                    runs[label].setdefault(key, []).append(result)
                if label == "batching on":
                    body = lambda i: large_body  # noqa: E731
                    run_load(base, "POST", "/v1/log-likelihood", body, len(batch), 1, 1.0)
                    large = run_load(base, "POST", "/v1/log-likelihood", body, len(batch), 1, max(args.duration, 5))
                    limits["http_large_images_per_s"].append(large.images_per_second)

    report |= {key: float(np.median(values)) for key, values in limits.items()}
    report["ort_gflops"] = report["ort_images_per_s"] * report["matmul_gflops_per_image"]
    median = {label: {key: median_run(r) for key, r in cells.items()} for label, cells in runs.items()}

    def per_round(a: str, b: str, name: str, c: int) -> list[float]:
        return [x.images_per_second / y.images_per_second for x, y in zip(runs[a][(name, c)], runs[b][(name, c)])]

    report["per_round"] = {
        "batching": per_round("batching on", "batching off", "classify", 32),
        "litserve": per_round("batching on", "litserve", "classify (exhaustive)", 32),
    }
    report["cells"] = [
        {"server": label, "endpoint": name, "concurrency": c, "images_per_s": r.images_per_second}
        | {f"p{q}_ms": r.percentile(q) for q in (50, 95, 99)}
        | {"errors": r.errors, "rounds_images_per_s": [x.images_per_second for x in runs[label][(name, c)]]}
        for label, cells in median.items()
        for (name, c), r in cells.items()
    ]

    print("5. adaptive against exhaustive", flush=True)
    x = images[: args.adaptive_images]
    full, full_s = in_process_scoring(model, x, args.adaptive_samples)
    fast, fast_s = in_process_scoring(model, x, args.adaptive_samples, screening)
    full_post = estimator.bayes_rule(full, model.log_prior)
    fast_post = estimator.bayes_rule(fast, model.log_prior)
    difference = np.abs(full_post.log_px - fast_post.log_px)
    report["adaptive"] = {
        "images": len(x),
        "num_samples": args.adaptive_samples,
        "screening": screening.text(),
        "speedup": full_s / fast_s,
        "sample_ratio": float(full.num_samples.sum() / fast.num_samples.sum()),
        "mean_abs_diff_nats": float(difference.mean()),
        "max_abs_diff_nats": float(difference.max()),
        "changed_predictions": int((full_post.log_py_x.argmax(-1) != fast_post.log_py_x.argmax(-1)).sum()),
    }
    print(f"  {report['adaptive']}", flush=True)

    from bench.report import write_report

    markdown = write_report(report, median, out)
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
