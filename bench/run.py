"""The benchmark: every figure side by side from one run on one machine, into --out's RESULTS.md,
results.json and throughput.png.

    python -m bench.run [--data-dir DIR] [--duration 3] [--rounds 3] [--num-samples 100] [--peers torch litserve]

1. limits: numpy float32 matmul rate, and ONNX Runtime in-process on the scoring workload;
2. the service over HTTP per endpoint at concurrency 1, 8, 32, 64;
3. --peers on the same model and workload: LitServe with its batching (classify), FastAPI + PyTorch eager;
4. adaptive scoring against exhaustive: speed ratio and the difference in nats.
Servers run one at a time. Each round starts every server in turn, so the machine's drift spreads over all;
each figure is the median round, and the target against LitServe lists every round's own ratio.
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import alternate, arguments, benchmark, document, mnist_digits, peer, service, table
from bench.load import CONCURRENCY, LoadResult, run_load
from service.engine.scoring import Scorer
from training.screening import answers, compare
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


def sweep(base: str, loads: dict, names: list[str], duration: float, label: str) -> dict[tuple[str, int], LoadResult]:
    """Every cell of `names` at every concurrency, on the server `label`."""
    results = {}
    for name in names:
        method, path, body, per = loads[name]
        run_load(base, method, path, body, per, 4, 1.0)  # warm-up
        for c in CONCURRENCY:
            r = results[(name, c)] = run_load(base, method, path, body, per, c, duration)
            print(
                f"  {label}: {name:>22} c={c:<3} {r.images_per_second:8.1f} img/s  p50 {r.percentile(50):7.1f} ms  "
                f"p99 {r.percentile(99):7.1f} ms  errors {r.errors}",
                flush=True,
            )
    return results


def cell(server: str, name: str, c: int, rounds: list[LoadResult]) -> dict:
    """A report's cell: the round of median throughput (the lower middle of an even count), and every round's."""
    r = sorted(rounds, key=lambda r: r.images_per_second)[(len(rounds) - 1) // 2]
    return (
        {"server": server, "endpoint": name, "concurrency": c, "images_per_s": r.images_per_second}
        | {f"p{q}_ms": r.percentile(q) for q in (50, 95, 99)}
        | {"errors": r.errors, "rounds_images_per_s": [x.images_per_second for x in rounds]}
    )


def measure(args) -> dict:
    k = args.num_samples
    scorer = Scorer.open(args.model_dir)  # the declared defaults, never the CVAE_* environment
    model, screening = scorer.model, scorer.screening
    images, labels = mnist_digits(max(args.large_batch, args.adaptive_images), args.data_dir, "binary")
    batch = images[: args.large_batch]
    loads = workloads(images, k)
    lit_loads = {"classify (exhaustive)": ("POST", "/predict", loads["classify (exhaustive)"][2], 1)}
    env = {"CVAE_MODEL_DIR": args.model_dir, "CVAE_MAX_BODY_BYTES": str(64_000_000), "CVAE_MAX_WORK": str(10**8)}
    large_body = {"images": batch.tolist(), "num_samples": k, "adaptive": False, "seed": 0}

    def limits() -> dict:
        found = {
            "matmul_gflops": matmul_gflops(),
            "ort_images_per_s": len(batch) / in_process_scoring(model, batch, k)[1],
            "ort_adaptive_images_per_s": len(batch) / in_process_scoring(model, batch, k, screening)[1],
        }
        print(f"1. limits: {found}", flush=True)
        return found

    def the_service() -> tuple[dict, float]:  # its cells, and its rate on large log-likelihood requests
        with service(env) as base:
            cells = sweep(base, loads, list(loads), args.duration, "2. service")
            for seconds in (1.0, max(args.duration, 5)):  # a warm-up, then the measure
                large = run_load(base, "POST", "/v1/log-likelihood", lambda i: large_body, len(batch), 1, seconds)
        return cells, large.images_per_second

    def torch_peer() -> dict:
        with peer("bench.peers.torch_peer", "/readyz", args.model_dir) as base:
            return sweep(base, loads, [n for n in loads if n != "classify"], args.duration, "3. torch")

    def litserve() -> dict:
        with peer("bench.peers.litserve_peer", "/health", args.model_dir, "32", "0.005") as base:
            return sweep(base, lit_loads, list(lit_loads), args.duration, "3. litserve")

    in_process_scoring(model, batch[:4], k)  # warm-up
    peers = {name: arm for name, arm in (("torch", torch_peer), ("litserve", litserve)) if name in args.peers}
    runs = alternate(args.rounds, {"limits": limits, "service": the_service, **peers})
    found, served = runs.pop("limits"), runs.pop("service")
    runs = {"service": [cells for cells, _ in served], **runs}
    report = {"matmul_gflops_per_image": scoring_flops_per_image(model.manifest, k) / 1e9}
    report |= {key: float(np.median([f[key] for f in found])) for key in found[0]}
    report["http_large_images_per_s"] = float(np.median([large for _, large in served]))
    report["ort_gflops"] = report["ort_images_per_s"] * report["matmul_gflops_per_image"]
    report["cells"] = [
        cell(label, name, c, [r[(name, c)] for r in rounds]) for label, rounds in runs.items() for name, c in rounds[0]
    ]
    print("4. adaptive against exhaustive", flush=True)
    x, y, k = images[: args.adaptive_images], labels[: args.adaptive_images], args.adaptive_samples
    (full, full_s), (fast, fast_s) = answers(model, x, k, None), answers(model, x, k, screening)
    adaptive = {"images": len(x), "num_samples": k, "screening": screening.text(), "speedup": full_s / fast_s}
    adaptive["sample_ratio"] = float(full["samples"].sum() / fast["samples"].sum())
    report["adaptive"] = adaptive | compare(full, fast, y)
    print(f"  {report['adaptive']}", flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    chart(report, Path(args.out) / "throughput.png")
    return report


ENDPOINTS = ("samples", "encode", "log-likelihood", "classify", "classify (exhaustive)")
# each server's label -> its name in the table and chart
SERVERS = {"service": "service", "torch": "FastAPI + PyTorch eager", "litserve": "LitServe, batching 32/5 ms"}


def _cells(report: dict) -> dict[tuple[str, str, int], dict]:
    return {(c["server"], c["endpoint"], c["concurrency"]): c for c in report["cells"]}


def _cell(c: dict | None) -> str:
    errors = f" {c['errors']} err" if c and c["errors"] else ""
    return f"{c['images_per_s']:.1f} ({c['p50_ms']:.0f}/{c['p95_ms']:.0f}/{c['p99_ms']:.0f}){errors}" if c else "-"


def _ratio(a: float, b: float) -> float:  # nan where the divisor is missing
    return a / b if b else float("nan")


def _target(text: str, ratio: float, met: bool, note: str = "") -> list[str]:
    return [text, f"{ratio:.2f}{note}", "met" if met else "**missed**"]


def markdown(report: dict) -> str:
    """RESULTS.md: the limits, every cell's throughput and latency, adaptive scoring and the targets."""
    cells = _cells(report)

    def ips(label: str, name: str, c: int = 32) -> float:
        cell = cells.get((label, name, c))
        return cell["images_per_s"] if cell and cell["images_per_s"] else float("nan")

    a = report["adaptive"]
    large = _ratio(report["http_large_images_per_s"], report["ort_images_per_s"])
    flop = _ratio(report["ort_gflops"], report["matmul_gflops"])
    targets = [
        _target("HTTP scoring at large batches ≥ 0.9 × in-process ONNX Runtime", large, large >= 0.9),
        _target("scoring path ≥ 0.6 × numpy matmul FLOP rate", flop, flop >= 0.6),
    ]
    if ("litserve", "classify (exhaustive)", 32) in cells:
        lit = _ratio(ips("service", "classify (exhaustive)"), ips("litserve", "classify (exhaustive)"))
        ours, theirs = (cells[(s, "classify (exhaustive)", 32)]["rounds_images_per_s"] for s in ("service", "litserve"))
        each_round = " (rounds: " + ", ".join(f"{_ratio(a, b):.2f}" for a, b in zip(ours, theirs)) + ")"
        targets.append(
            _target("single-image classify (exhaustive), c=32: ≥ 1.0 × LitServe", lit, lit >= 1.0, each_round)
        )
    for name in ("samples", "encode", "log-likelihood", "classify (exhaustive)"):
        if ("torch", name, 32) in cells:
            worst = min(_ratio(ips("service", name, c), ips("torch", name, c)) for c in CONCURRENCY)
            targets.append(_target(f"{name}: beats FastAPI + PyTorch eager (worst ratio over c)", worst, worst > 1.0))
    return document(
        f"Machine: {platform.machine()}, {report['cpu_count']} CPUs, {platform.python_implementation()} "
        f"{platform.python_version()}; K = {report['num_samples']} importance samples per class in the scoring "
        f"workloads; {report['duration']:g} s per cell, each figure the median of {report['rounds']} rounds over "
        "every server (servers run one at a time); load from a second process on loopback, one keep-alive "
        "connection per client.",
        [
            "| limit | value |",
            "|---|---|",
            f"| numpy float32 matmul (1024x1024) | {report['matmul_gflops']:.1f} GFLOP/s |",
            f"| ONNX Runtime in-process, exhaustive scoring | {report['ort_images_per_s']:.1f} images/s "
            f"= {report['ort_gflops']:.1f} GFLOP/s |",
            f"| ONNX Runtime in-process, adaptive scoring (the default) | {report['ort_adaptive_images_per_s']:.1f} "
            "images/s |",
            f"| service over HTTP, {report['large_batch']} images per log-likelihood request | "
            f"{report['http_large_images_per_s']:.1f} images/s |",
        ],
        "Throughput in images/s (latency p50/p95/p99 in ms) at concurrency 1, 8, 32, 64:",
        table(
            ["server / endpoint", *(f"c={c}" for c in CONCURRENCY)],
            [
                [f"{SERVERS[label]}: {name}", *(_cell(cells.get((label, name, c))) for c in CONCURRENCY)]
                for name in ENDPOINTS
                for label in SERVERS
                if any((label, name, c) in cells for c in CONCURRENCY)
            ],
        ),
        f"Adaptive against exhaustive scoring, in process, {a['images']} test images, K = {a['num_samples']} "
        f"({a['screening']}): {a['speedup']:.2f}x faster ({a['sample_ratio']:.2f}x fewer decoder passes), "
        f"|difference in log p(x)| mean {a['mean_abs_diff_log_px']:.4f} nats, max {a['max_abs_diff_log_px']:.4f}, "
        f"{a['changed_predictions']} predicted classes changed.",
        table(["target", "ratio", ""], targets),
    )


def chart(report: dict, path: Path) -> None:
    """throughput.png: images/s against concurrency, one panel per endpoint, one line per server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = _cells(report)
    fig, axes = plt.subplots(1, len(ENDPOINTS), figsize=(4 * len(ENDPOINTS), 3.5), sharex=True)
    for ax, name in zip(axes, ENDPOINTS):
        for label, server in SERVERS.items():
            points = [(c, cells[(label, name, c)]["images_per_s"]) for c in CONCURRENCY if (label, name, c) in cells]
            if points:
                ax.plot(*zip(*points), marker="o", label=server)
        ax.set_xscale("log", base=2)
        ax.set_ylim(bottom=0)
        ax.set_title(name)
        ax.set_xlabel("concurrency")
    axes[0].set_ylabel("images/s")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> None:
    parser = arguments(
        "bench.run",
        __doc__,
        duration=(3.0, "seconds per load cell"),
        rounds=(3, "rounds over every server; each cell its median"),
        num_samples=(100, "K of the scoring workloads"),
        large_batch=(64, "images per large scoring request"),
        adaptive_images=(10000, "test images for section 4 (all of them)"),
        adaptive_samples=(1000, "K for section 4"),
    )
    peers = ["torch", "litserve"]
    parser.add_argument("--peers", nargs="*", choices=peers, default=peers, help="the peers to run (default: both)")
    benchmark(parser, argv, "results", measure, markdown)


if __name__ == "__main__":
    sys.exit(main())
