"""A mixed load on every endpoint from a separate process, bounded in count and time.

    python -m bench.mixed_load BASE_URL [--requests 10000] [--concurrency 64] [--max-seconds 300]

Prints throughput, latency percentiles (of the answers 200) and counts per status; exits 1 when any request
failed other than with a declared 503 (capacity) answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import httpx

from bench.load import load

ZERO = [0.0] * 784
ONE = [0.0] * 300 + [1.0] * 184 + [0.0] * 300


def mixed(latent_dim: int = 32):
    """Every endpoint in turn: request(i) -> (method, path, JSON body or None); latents of `latent_dim`."""
    z = [-1.0] * latent_dim
    mix = [
        ("POST", "/v1/samples", lambda i: {"n": 1 + i % 4, "seed": i, "binary": i % 2 == 0}),
        ("POST", "/v1/samples", lambda i: {"n": 2, "y": i % 10}),
        ("POST", "/v1/interpolations", lambda i: {"z_from": z, "z_to": [-v for v in z], "steps": 4, "y": i % 10}),
        ("POST", "/v1/encode", lambda i: {"images": [ONE if i % 2 else ZERO]}),
        ("POST", "/v1/log-likelihood", lambda i: {"images": [ONE], "num_samples": 16, "seed": i}),
        ("POST", "/v1/classify", lambda i: {"images": [ZERO, ONE], "num_samples": 16, "seed": i}),
        ("GET", "/v1/model", None),
        ("GET", "/v1/samples.png?n=4&y=3", None),
        ("GET", "/healthz", None),
        ("GET", "/metrics", None),
    ]

    def request(i: int) -> tuple[str, str, dict | None]:
        method, path, body = mix[i % len(mix)]
        return method, path, body(i) if body else None

    return request


def run(base: str, total: int, concurrency: int, max_seconds: float, latent_dim: int) -> dict:
    deadline = time.perf_counter() + max_seconds
    more = lambda i: i < total and time.perf_counter() < deadline  # noqa: E731
    result = asyncio.run(load(base, mixed(latent_dim), concurrency, more, timeout=60))
    done = sum(result.statuses.values())
    return {
        "requests": done,
        "seconds": round(result.seconds, 2),
        "requests_per_s": round(done / result.seconds, 1),
        "p50_ms": round(result.percentile(50), 1),  # of the answers 200
        "p99_ms": round(result.percentile(99), 1),
        "statuses": dict(sorted(result.statuses.items())),
        "failures": sum(v for k, v in result.statuses.items() if k not in ("200", "503")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mixed_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("base_url")
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-seconds", type=float, default=300)
    args = parser.parse_args(argv)
    latent_dim = httpx.get(f"{args.base_url}/v1/model").json()["latent_dim"]
    result = run(args.base_url, args.requests, args.concurrency, args.max_seconds, latent_dim)
    print(json.dumps(result))
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
