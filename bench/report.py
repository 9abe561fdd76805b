"""The benchmark's markdown table, target checks and chart."""

from __future__ import annotations

import platform
from pathlib import Path

from bench.load import CONCURRENCY, LoadResult


def _row(label: str, results: dict, name: str) -> list[str]:
    cells = []
    for c in CONCURRENCY:
        r: LoadResult | None = results.get((name, c))
        cells.append(
            "-"
            if r is None
            else f"{r.images_per_second:.1f} ({r.percentile(50):.0f}/{r.percentile(95):.0f}/{r.percentile(99):.0f})"
            + (f" {r.errors} err" if r.errors else "")
        )
    return [label, *cells]


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def write_report(report: dict, http: dict, torch_peer: dict, litserve: dict, out: Path) -> str:
    k = report["num_samples"]
    lines = [
        f"Machine: {platform.machine()}, {report['cpu_count']} CPUs, {platform.python_implementation()} "
        f"{platform.python_version()}; K = {k} importance samples per class in the scoring workloads; "
        f"{report['duration']:g} s per cell, each figure the median of {report['rounds']} rounds over every server "
        "(servers run one at a time); load from a second process on loopback, one keep-alive connection per client.",
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
    for name in ("samples", "encode", "log-likelihood", "classify", "classify (exhaustive)"):
        lines.append("| " + " | ".join(_row(f"service, batching on: {name}", http["true"], name)) + " |")
        lines.append("| " + " | ".join(_row(f"service, batching off: {name}", http["false"], name)) + " |")
        if any(key[0] == name for key in torch_peer):
            lines.append("| " + " | ".join(_row(f"FastAPI + PyTorch eager: {name}", torch_peer, name)) + " |")
        if any(key[0] == name for key in litserve):
            lines.append("| " + " | ".join(_row(f"LitServe, batching 32/5 ms: {name}", litserve, name)) + " |")

    a = report["adaptive"]
    lines += [
        "",
        f"Adaptive against exhaustive scoring, in process, {a['images']} test images, K = {a['num_samples']}"
        + (f" ({a['screening']})" if "screening" in a else "")
        + ": "
        f"{a['speedup']:.2f}x faster ({a['sample_ratio']:.2f}x fewer decoder passes), "
        f"|difference in log p(x)| mean {a['mean_abs_diff_nats']:.4f} nats, max {a['max_abs_diff_nats']:.4f}, "
        f"{a['changed_predictions']} predicted classes changed.",
        "",
    ]

    def ips(results, name, c):
        r = results.get((name, c))
        return r.images_per_second if r and r.images else float("nan")

    def ratio(a: float, b: float) -> float:
        return a / b if b else float("nan")

    large_ratio = ratio(report["http_large_images_per_s"], report["ort_images_per_s"])
    flop_ratio = ratio(report["ort_gflops"], report["matmul_gflops"])
    batching_ratio = ratio(ips(http["true"], "classify", 32), ips(http["false"], "classify", 32))
    lit_ratio = ratio(ips(http["true"], "classify (exhaustive)", 32), ips(litserve, "classify (exhaustive)", 32))
    # Batching can at most lift single-image classify to the in-process rate of the same scoring in big batches.
    batching_ceiling = ratio(report["ort_adaptive_images_per_s"], ips(http["false"], "classify", 32))
    rounds = lambda key: ", ".join(f"{r:.2f}" for r in report["per_round"][key])  # noqa: E731
    torch_ratios = {
        name: min(ratio(ips(http["true"], name, c), ips(torch_peer, name, c)) for c in CONCURRENCY)
        for name in ("samples", "encode", "log-likelihood", "classify (exhaustive)")
    }
    lines += [
        "| target | ratio | |",
        "|---|---|---|",
        f"| HTTP scoring at large batches ≥ 0.9 × in-process ONNX Runtime | {large_ratio:.2f} | "
        f"{_verdict(large_ratio >= 0.9)} |",
        f"| scoring path ≥ 0.6 × numpy matmul FLOP rate | {flop_ratio:.2f} | {_verdict(flop_ratio >= 0.6)} |",
        f"| single-image classify, c=32: batching on ≥ 4 × off | {batching_ratio:.2f} (rounds: "
        f"{rounds('batching')}; at most {batching_ceiling:.2f} here: in-process adaptive rate ÷ batching off) | "
        f"{_verdict(batching_ratio >= 4)} |",
        f"| single-image classify (exhaustive), c=32: ≥ 1.0 × LitServe | {lit_ratio:.2f} (rounds: "
        f"{rounds('litserve')}) | {_verdict(lit_ratio >= 1.0)} |",
    ]
    for name, ratio in torch_ratios.items():
        lines.append(
            f"| {name}: beats FastAPI + PyTorch eager (worst ratio over c) | {ratio:.2f} | {_verdict(ratio > 1.0)} |"
        )
    markdown = "\n".join(lines) + "\n"
    (out / "RESULTS.md").write_text(markdown)
    _chart(http, torch_peer, litserve, out / "throughput.png")
    return markdown


def _chart(http: dict, torch_peer: dict, litserve: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["samples", "encode", "log-likelihood", "classify", "classify (exhaustive)"]
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.5), sharex=True)
    series = [
        ("service, batching on", http["true"]),
        ("service, batching off", http["false"]),
        ("FastAPI + PyTorch eager", torch_peer),
        ("LitServe", litserve),
    ]
    for ax, name in zip(axes, names):
        for label, results in series:
            points = [(c, results[(name, c)].images_per_second) for c in CONCURRENCY if (name, c) in results]
            if points:
                ax.plot(*zip(*points), marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_ylim(bottom=0)
        ax.set_title(name)
        ax.set_xlabel("concurrency")
    axes[0].set_ylabel("images/s")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
