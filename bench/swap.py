"""A model version swapped in under a steady mixed load: failed requests and the p99 latency around it.
Writes bench/results/swap.json and SWAP.md.

    python -m bench.swap [--concurrency 32] [--seconds 60] [--swap-at 20] [--new DIR] [--out bench/results]

The service starts on a fresh repository holding one version, `--model-dir` (the shipped model), under
bench.mixed_load's mix of every endpoint at a steady concurrency; at `--swap-at` seconds version `--new`
(the newest shipped by default) is copied in under a hidden name and renamed into place, as the README
says, and the repository scan loads, checks and warms it up. From every request's status, latency and
answering version: the failed (any answer but 200, or a transport error); the baseline p99 of the
requests that started in the steady window before the swap (after a warm-up of a fifth of it); and the
p99 of each one-second window after it, and how many exceed twice the baseline (the target: none
fails, and at most 5 such seconds).
"""

from __future__ import annotations

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

from bench.common import arguments, benchmark, document, service, table
from bench.load import load
from bench.mixed_load import mixed
from service.operations.versions import newest, version_key
from service.settings import SHIPPED_REPOSITORY


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


def measure(args) -> dict:
    if os.environ.get("CVAE_MODEL_DIR"):
        raise SystemExit("unset CVAE_MODEL_DIR: the benchmark serves a model repository")
    old, new = Path(args.model_dir), args.new or newest(SHIPPED_REPOSITORY, "mnist-cvae")
    seconds, swap_at = args.seconds, args.swap_at
    old_version = json.loads((old / "manifest.json").read_text())["version"]
    new_version = json.loads((new / "manifest.json").read_text())["version"]
    if version_key(new_version) <= version_key(old_version):
        new_version = ".".join(str(n) for n in (version_key(old_version)[0] + 1, 0, 0))
    events: dict[str, float] = {}
    records: list[tuple[float, float, str, str]] = []  # (start, latency, status, version) of every request
    with tempfile.TemporaryDirectory() as tmp:
        repository = Path(tmp) / "models"
        place(old, repository, "mnist-cvae", old_version)
        env = {"CVAE_MODEL_REPOSITORY": str(repository), "CVAE_REPOSITORY_POLL_S": str(args.poll_s)}
        with service(env) as base:
            began = time.perf_counter()

            def record(start: float, latency: float, status: int | str, headers: dict) -> None:
                records.append((start - began, latency, str(status), headers.get(b"x-model-version", b"").decode()))

            async def swap_under_load() -> None:  # swaps at `swap_at`, then watches for the new version to be ready
                more = lambda i: time.perf_counter() - began < seconds  # noqa: E731
                mixed_load = asyncio.create_task(load(base, mixed(), args.concurrency, more, timeout=60, record=record))
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
                await mixed_load

            asyncio.run(swap_under_load())
    return summarize(records, events, seconds, swap_at, old_version, new_version)


def summarize(records, events, seconds, swap_at, old_version, new_version) -> dict:
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


def markdown(r: dict) -> str:
    windows = [
        [str(w["second"]), str(w["requests"]), "-" if w["p99_ms"] is None else f"{w['p99_ms']:.0f}"]
        for w in r["windows"]
    ]
    figures = {
        "requests": f"{r['requests']} ({r['requests_per_s']}/s)",
        "failed (any answer but 200, or a transport error)": f"**{r['failed']}** {r['failed_statuses'] or ''}",
        "p99 before the swap (steady window)": f"{r['baseline_p99_ms']} ms",
        "worst one-second p99 after the swap": f"{r['worst_p99_after_swap_ms']} ms",
        "seconds after the swap with p99 above 2x the baseline": f"**{r['seconds_over_2x_baseline']}**",
        "answers per version": str(r["answers_per_version"]),
        "answers per version from 1 s after ready": str(r["answers_per_version_after_ready"]),
    }
    return document(
        "# A version swapped in under load",
        f"`{r['command']}`: the service in its own process on a repository holding version {r['old_version']}; "
        f"bench.mixed_load's mix of every endpoint at concurrency {r['concurrency']} for {r['seconds']:g} s from "
        f"this process; version {r['new_version']} placed in the repository (hidden copy, then a rename) at "
        f"{r['swap_started_s']} s, ready (loaded, checked, warmed up) at {r['new_version_ready_s']} s.",
        table(["", ""], [[name, value] for name, value in figures.items()]),
        f"Target (no failed request; p99 at most 2x for at most 5 s): **{'met' if r['target_met'] else 'missed'}**.",
        "p99 per second after the swap:",
        table(["second", "requests", "p99 ms"], windows),
    )


def main(argv: list[str] | None = None) -> int:
    parser = arguments(
        "bench.swap",
        __doc__,
        data=None,
        concurrency=(32, "clients of the mixed load"),
        seconds=(60.0, "length of the run"),
        swap_at=(20.0, "when the new version is placed"),
        new=(Path, "the version to swap in (default: the newest shipped)"),
        poll_s=(0.5, "the service's repository scan interval"),
    )

    return 0 if benchmark(parser, argv, "swap", measure, markdown)["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
