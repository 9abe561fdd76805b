"""A closed-loop HTTP load generator: `concurrency` workers, each sending its next request
as soon as the last one is answered, for `duration` seconds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import numpy as np

CONCURRENCY = (1, 8, 32, 64)


@dataclass
class LoadResult:
    requests: int
    images: int
    errors: int
    seconds: float
    latencies: list[float]

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000) if self.latencies else float("nan")


async def _load(
    base_url: str,
    method: str,
    path: str,
    body: Callable[[int], dict] | None,
    images_per_request: int,
    concurrency: int,
    duration: float,
    timeout: float,
) -> LoadResult:
    latencies: list[float] = []
    errors = 0
    count = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits) as client:
        stop = time.perf_counter() + duration

        async def worker(index: int) -> None:
            nonlocal errors, count
            i = index
            while time.perf_counter() < stop:
                started = time.perf_counter()
                try:
                    if method == "GET":
                        response = await client.get(path)
                    else:
                        response = await client.post(path, json=body(i))
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - started)
                    count += 1
                else:
                    errors += 1
                i += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        seconds = time.perf_counter() - started
    return LoadResult(count, count * images_per_request, errors, seconds, latencies)


def run_load(base_url, method, path, body, images_per_request, concurrency, duration, timeout=120.0) -> LoadResult:
    return asyncio.run(_load(base_url, method, path, body, images_per_request, concurrency, duration, timeout))
