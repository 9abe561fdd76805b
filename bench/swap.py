"""A model version swapped in under a steady mixed load: failed requests and the p99 latency around it.

    python -m bench.swap [--concurrency 32] [--seconds 60] [--swap-at 20] [--new DIR] [--out bench/results]

The service (`cvae-serve`, its own process) starts on a fresh repository holding one version of
the shipped model. This process sends bench.mixed_load's mix of every endpoint at a steady
concurrency. At `--swap-at` seconds, version `--new` (the newest shipped version by default) is
copied into the repository under a hidden name and renamed into place, as the README says; the
repository scan loads, checks and warms it up, and then it takes traffic.

Measured, side by side in the one run: every request's status, latency and answering version.
- failed: any answer but 200 (503 included) and any transport error;
- the baseline p99: the requests that started in the steady window before the swap (after a
  warm-up of a fifth of it);
- after the swap: the p99 of each one-second window, and how many seconds of it exceed twice the
  baseline (the target: none fails, and at most 5 such seconds).

Writes bench/results/swap.json and SWAP.md, and prints the markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from bench.common import RESULTS, save, service
from bench.mixed_load import drive
from service.operations.versions import newest, version_key
from service.settings import SHIPPED_MODEL, SHIPPED_REPOSITORY


def place(
    source: Path, repository: Path, name: str, version: str, changes: dict | None = None, rename: bool = True
) -> Path:
    """Copy a model directory in as name/version: into a hidden folder first, then one rename. `changes`
    are set in its manifest too; with rename=False the hidden folder is left as it is and returned."""
    staging = repository / name / f".{version}.incoming"
    staging.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, staging, ignore=shutil.ignore_patterns("checkpoint.pt", "*.png", "*.md"))
    manifest = json.loads((staging / "manifest.json").read_text())
    wanted = {"name": name, "version": version, **(changes or {})}
    if any(manifest.get(key) != value for key, value in wanted.items()):
        manifest.update(wanted)
        (staging / "manifest.json").write_text(json.dumps(manifest))
    if not rename:
        return staging
    final = repository / name / version
    staging.rename(final)
    return final


def run(concurrency: int, seconds: float, swap_at: float, new: Path, poll_s: float) -> dict:
    old_version = json.loads((SHIPPED_MODEL / "manifest.json").read_text())["version"]
    new_version = json.loads((new / "manifest.json").read_text())["version"]
    if version_key(new_version) <= version_key(old_version):
        new_version = ".".join(str(n) for n in (version_key(old_version)[0] + 1, 0, 0))
    events: dict[str, float] = {}
    records: list[tuple[float, float, str, str]] = []  # (start, latency, status, version) of every request
    with tempfile.TemporaryDirectory() as tmp:
        repository = Path(tmp) / "models"
        place(SHIPPED_MODEL, repository, "mnist-cvae", old_version)
        env = {"CVAE_MODEL_REPOSITORY": str(repository), "CVAE_REPOSITORY_POLL_S": str(poll_s)}
        with service(env) as base:
            began = time.perf_counter()

            async def ticker() -> None:  # swaps at `swap_at`, then watches for the new version to be ready
                while (now := time.perf_counter() - began) < seconds:
                    if "swap" not in events and now >= swap_at:
                        events["swap"] = now
                        await asyncio.to_thread(place, new, repository, "mnist-cvae", new_version)
                    elif "swap" in events and "ready" not in events:
                        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
                            listing = (await client.get("/v1/models")).json()["models"]
                        if any(m["version"] == new_version and m["state"] == "ready" for m in listing):
                            events["ready"] = now
                    await asyncio.sleep(0.1)

            more = lambda i: time.perf_counter() - began < seconds  # noqa: E731
            record = lambda start, *rest: records.append((start - began, *rest))  # noqa: E731
            asyncio.run(drive(base, concurrency, more, record, beside=[ticker()]))
    return summarize(records, events, concurrency, seconds, swap_at, old_version, new_version, new)


def summarize(records, events, concurrency, seconds, swap_at, old_version, new_version, new) -> dict:
    start, latency = np.array([r[0] for r in records]), np.array([r[1] for r in records])
    failed = [r[2] for r in records if r[2] != "200"]
    steady = (start >= swap_at / 5) & (start < swap_at)
    baseline = float(np.percentile(latency[steady], 99))
    windows = []
    for second in range(int(swap_at), int(seconds)):
        inside = (start >= second) & (start < second + 1)
        p99 = 1000 * float(np.percentile(latency[inside], 99)) if inside.any() else None
        windows.append({"second": second, "requests": int(inside.sum()), "p99_ms": p99})
    over = [w for w in windows if w["p99_ms"] is None or w["p99_ms"] > 2000 * baseline]
    versions = Counter(r[3] for r in records if r[3])
    after = Counter(r[3] for r in records if r[3] and "ready" in events and r[0] > events["ready"] + 1)
    return {
        "command": (
            f"python -m bench.swap --concurrency {concurrency} --seconds {seconds:g} --swap-at {swap_at:g} "
            f"--new {os.path.relpath(new, SHIPPED_REPOSITORY.parent)}"
        ),
        "concurrency": concurrency,
        "seconds": seconds,
        "requests": len(records),
        "requests_per_s": round(len(records) / seconds, 1),
        "failed": len(failed),
        "failed_statuses": sorted(set(failed)),
        "swap_started_s": round(events.get("swap", float("nan")), 2),
        "new_version_ready_s": round(events["ready"], 2) if "ready" in events else None,
        "baseline_p99_ms": round(1000 * baseline, 1),
        "worst_p99_after_swap_ms": round(max((w["p99_ms"] or 0) for w in windows), 1),
        "seconds_over_2x_baseline": len(over),
        "answers_per_version": dict(versions),
        "answers_per_version_after_ready": dict(after),
        "old_version": old_version,
        "new_version": new_version,
        "windows": windows,
        "target_met": not failed and len(over) <= 5 and "ready" in events,
    }


def markdown(report: dict) -> str:
    rows = "\n".join(
        f"| {w['second']} | {w['requests']} | " + ("-" if w["p99_ms"] is None else f"{w['p99_ms']:.0f}") + " |"
        for w in report["windows"]
    )
    verdict = "met" if report["target_met"] else "missed"
    return f"""# A version swapped in under load

`{report["command"]}`: the service in its own process on a repository holding version
{report["old_version"]}; bench.mixed_load's mix of every endpoint at concurrency {report["concurrency"]}
for {report["seconds"]:g} s from this process; version {report["new_version"]} placed in the repository
(hidden copy, then a rename) at {report["swap_started_s"]} s, ready (loaded, checked, warmed up) at
{report["new_version_ready_s"]} s.

| | |
|---|---|
| requests | {report["requests"]} ({report["requests_per_s"]}/s) |
| failed (any answer but 200, or a transport error) | **{report["failed"]}** {report["failed_statuses"] or ""} |
| p99 before the swap (steady window) | {report["baseline_p99_ms"]} ms |
| worst one-second p99 after the swap | {report["worst_p99_after_swap_ms"]} ms |
| seconds after the swap with p99 above 2x the baseline | **{report["seconds_over_2x_baseline"]}** |
| answers per version | {report["answers_per_version"]} |
| answers per version from 1 s after ready | {report["answers_per_version_after_ready"]} |

Target (no failed request; p99 at most 2x for at most 5 s): **{verdict}**.

p99 per second after the swap:

| second | requests | p99 ms |
|---|---|---|
{rows}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.swap", description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--swap-at", type=float, default=20)
    parser.add_argument("--new", type=Path, default=None, help="the version to swap in (default: newest shipped)")
    parser.add_argument("--poll-s", type=float, default=0.5, help="the service's repository scan interval")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if os.environ.get("CVAE_MODEL_DIR"):
        parser.error("unset CVAE_MODEL_DIR: the benchmark serves a model repository")
    new = args.new or newest(SHIPPED_REPOSITORY, "mnist-cvae")
    report = run(args.concurrency, args.seconds, args.swap_at, new, args.poll_s)
    save(args.out, "swap", report, markdown(report))
    return 0 if report["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
