"""A mixed load on every endpoint from a separate process, bounded in count and time.

    python -m bench.mixed_load BASE_URL [--requests 10000] [--concurrency 64] [--max-seconds 300]

Prints throughput, latency percentiles and counts per status; exits 1 when any request
failed other than with a declared 503 (capacity) answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter

import httpx
import numpy as np

ZERO = [0.0] * 784
ONE = [0.0] * 300 + [1.0] * 184 + [0.0] * 300

MIX = [
    ("POST", "/v1/samples", lambda i: {"n": 1 + i % 4, "seed": i, "binary": i % 2 == 0}),
    ("POST", "/v1/samples", lambda i: {"n": 2, "y": i % 10}),
    ("POST", "/v1/interpolations", lambda i: {"z_from": [-1.0] * 32, "z_to": [1.0] * 32, "steps": 4, "y": i % 10}),
    ("POST", "/v1/encode", lambda i: {"images": [ONE if i % 2 else ZERO]}),
    ("POST", "/v1/log-likelihood", lambda i: {"images": [ONE], "num_samples": 16, "seed": i}),
    ("POST", "/v1/classify", lambda i: {"images": [ZERO, ONE], "num_samples": 16, "seed": i}),
    ("GET", "/v1/model", None),
    ("GET", "/v1/samples.png?n=4&y=3", None),
    ("GET", "/healthz", None),
    ("GET", "/metrics", None),
]


async def drive(base: str, concurrency: int, more, record, latent_dim: int = 32, beside=()) -> None:
    """MIX's requests in turn from `concurrency` workers while more(i) holds for the next one; record(start,
    latency, status, version) for each (status: the code as text, or the transport error's name); the
    coroutines `beside` run alongside."""
    issued = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:

        async def worker() -> None:
            nonlocal issued
            while more(issued):
                i = issued
                issued += 1
                method, path, body = MIX[i % len(MIX)]
                payload = body(i) if body else None
                if payload and "z_from" in payload:
                    payload = {**payload, "z_from": [-1.0] * latent_dim, "z_to": [1.0] * latent_dim}
                started = time.perf_counter()
                try:
                    response = await (client.get(path) if method == "GET" else client.post(path, json=payload))
                    status, version = str(response.status_code), response.headers.get("x-model-version", "")
                except httpx.HTTPError as error:
                    status, version = type(error).__name__, ""
                record(started, time.perf_counter() - started, status, version)

        await asyncio.gather(*beside, *(worker() for _ in range(concurrency)))


async def run(base: str, total: int, concurrency: int, max_seconds: float, latent_dim: int) -> dict:
    statuses: Counter = Counter()
    latencies: list[float] = []

    def record(start: float, latency: float, status: str, version: str) -> None:
        statuses[status] += 1
        latencies.append(latency)

    started = time.perf_counter()
    deadline = started + max_seconds
    await drive(base, concurrency, lambda i: i < total and time.perf_counter() < deadline, record, latent_dim)
    seconds = time.perf_counter() - started
    done = sum(statuses.values())
    return {
        "requests": done,
        "seconds": round(seconds, 2),
        "requests_per_s": round(done / seconds, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 1),
        "p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 1),
        "statuses": dict(sorted(statuses.items())),
        "failures": sum(v for k, v in statuses.items() if k not in ("200", "503")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mixed_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("base_url")
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-seconds", type=float, default=300)
    args = parser.parse_args(argv)
    latent_dim = httpx.get(f"{args.base_url}/v1/model").json()["latent_dim"]
    result = asyncio.run(run(args.base_url, args.requests, args.concurrency, args.max_seconds, latent_dim))
    print(json.dumps(result))
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
