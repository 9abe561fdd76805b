"""The benchmark's markdown table, target checks and chart."""

from __future__ import annotations

import platform
from pathlib import Path

from bench.load import CONCURRENCY

ENDPOINTS = ("samples", "encode", "log-likelihood", "classify", "classify (exhaustive)")
SERVERS = {  # bench.run's label -> the name in the table and chart
    "batching on": "service, batching on",
    "batching off": "service, batching off",
    "torch": "FastAPI + PyTorch eager",
    "litserve": "LitServe, batching 32/5 ms",
}


def _cell(r) -> str:
    if r is None:
        return "-"
    text = f"{r.images_per_second:.1f} ({r.percentile(50):.0f}/{r.percentile(95):.0f}/{r.percentile(99):.0f})"
    return text + (f" {r.errors} err" if r.errors else "")


def _target(text: str, ratio: float, met: bool, note: str = "") -> str:
    return f"| {text} | {ratio:.2f}{note} | {'met' if met else '**missed**'} |"


def write_report(report: dict, median: dict, out: Path) -> str:
    """RESULTS.md and throughput.png in `out`, from bench.run's report and its median cells per server label."""
    on, off, torch_peer, litserve = (median[label] for label in SERVERS)
    lines = [
        f"Machine: {platform.machine()}, {report['cpu_count']} CPUs, {platform.python_implementation()} "
        f"{platform.python_version()}; K = {report['num_samples']} importance samples per class in the scoring "
        f"workloads; {report['duration']:g} s per cell, each figure the median of {report['rounds']} rounds over "
        "every server (servers run one at a time); load from a second process on loopback, one keep-alive "
        "connection per client.",
        "",
        "| limit | value |",
        "|---|---|",
        f"| numpy float32 matmul (1024x1024) | {report['matmul_gflops']:.1f} GFLOP/s |",
        f"| ONNX Runtime in-process, exhaustive scoring | {report['ort_images_per_s']:.1f} images/s "
        f"= {report['ort_gflops']:.1f} GFLOP/s |",
        f"| ONNX Runtime in-process, adaptive scoring (the default) | {report['ort_adaptive_images_per_s']:.1f} "
        "images/s |",
        f"| service over HTTP, {report['large_batch']} images per log-likelihood request | "
        f"{report['http_large_images_per_s']:.1f} images/s |",
        "",
        "Throughput in images/s (latency p50/p95/p99 in ms) at concurrency 1, 8, 32, 64:",
        "",
        "| server / endpoint | c=1 | c=8 | c=32 | c=64 |",
        "|---|---|---|---|---|",
    ]
    for name in ENDPOINTS:
        for label, results in median.items():
            if label.startswith("batching") or any(key[0] == name for key in results):
                cells = [f"{SERVERS[label]}: {name}", *(_cell(results.get((name, c))) for c in CONCURRENCY)]
                lines.append("| " + " | ".join(cells) + " |")

    a = report["adaptive"]
    lines += [
        "",
        f"Adaptive against exhaustive scoring, in process, {a['images']} test images, K = {a['num_samples']}"
        + (f" ({a['screening']})" if "screening" in a else "")
        + f": {a['speedup']:.2f}x faster ({a['sample_ratio']:.2f}x fewer decoder passes), "
        f"|difference in log p(x)| mean {a['mean_abs_diff_nats']:.4f} nats, max {a['max_abs_diff_nats']:.4f}, "
        f"{a['changed_predictions']} predicted classes changed.",
        "",
    ]

    def ips(results, name, c=32):
        r = results.get((name, c))
        return r.images_per_second if r and r.images else float("nan")

    def ratio(a: float, b: float) -> float:
        return a / b if b else float("nan")

    large = ratio(report["http_large_images_per_s"], report["ort_images_per_s"])
    flop = ratio(report["ort_gflops"], report["matmul_gflops"])
    batching = ratio(ips(on, "classify"), ips(off, "classify"))
    lit = ratio(ips(on, "classify (exhaustive)"), ips(litserve, "classify (exhaustive)"))
    # Batching can at most lift single-image classify to the in-process rate of the same scoring in big batches.
    ceiling = ratio(report["ort_adaptive_images_per_s"], ips(off, "classify"))
    rounds = lambda key: ", ".join(f"{r:.2f}" for r in report["per_round"][key])  # noqa: E731
    lines += [
        "| target | ratio | |",
        "|---|---|---|",
        _target("HTTP scoring at large batches ≥ 0.9 × in-process ONNX Runtime", large, large >= 0.9),
        _target("scoring path ≥ 0.6 × numpy matmul FLOP rate", flop, flop >= 0.6),
        _target(
            "single-image classify, c=32: batching on ≥ 4 × off",
            batching,
            batching >= 4,
            f" (rounds: {rounds('batching')}; at most {ceiling:.2f} here: in-process adaptive rate ÷ batching off)",
        ),
        _target(
            "single-image classify (exhaustive), c=32: ≥ 1.0 × LitServe",
            lit,
            lit >= 1.0,
            f" (rounds: {rounds('litserve')})",
        ),
    ]
    for name in ("samples", "encode", "log-likelihood", "classify (exhaustive)"):
        worst = min(ratio(ips(on, name, c), ips(torch_peer, name, c)) for c in CONCURRENCY)
        lines.append(_target(f"{name}: beats FastAPI + PyTorch eager (worst ratio over c)", worst, worst > 1.0))
    markdown = "\n".join(lines) + "\n"
    (out / "RESULTS.md").write_text(markdown)
    _chart(median, out / "throughput.png")
    return markdown


def _chart(median: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ENDPOINTS), figsize=(4 * len(ENDPOINTS), 3.5), sharex=True)
    for ax, name in zip(axes, ENDPOINTS):
        for label, results in median.items():
            points = [(c, results[(name, c)].images_per_second) for c in CONCURRENCY if (name, c) in results]
            if points:
                ax.plot(*zip(*points), marker="o", label=SERVERS[label])
        ax.set_xscale("log", base=2)
        ax.set_ylim(bottom=0)
        ax.set_title(name)
        ax.set_xlabel("concurrency")
    axes[0].set_ylabel("images/s")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
