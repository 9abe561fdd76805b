"""A closed-loop HTTP load generator: `concurrency` workers, each on its own keep-alive
connection, sending its next request as soon as the last one is answered, for `duration` seconds.

It speaks just enough HTTP/1.1 (Content-Length or chunked bodies) to stay cheap: on a
machine whose cores the server shares, a heavy client (a pooled general-purpose one
costs a millisecond or more per request and grows with the pool) would measure itself.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

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


class Connection:
    """One HTTP/1.1 keep-alive connection; reopened when the server closes it."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(head + body)
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        headers = {}
        while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            payload = b""
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                payload += await self.reader.readexactly(size + 2)
            await self.reader.readuntil(b"\r\n")
        else:
            payload = await self.reader.readexactly(int(headers.get(b"content-length", b"0")))
        if headers.get(b"connection", b"").lower() == b"close":
            await self.close()
        return status, payload

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _head(method: str, host: str, path: str, length: int, headers: tuple[str, ...] = ()) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Accept: application/json", *headers]
    if method != "GET":
        lines += ["Content-Type: application/json", f"Content-Length: {length}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _load(
    base_url: str,
    method: str,
    path: str,
    body: Callable[[int], dict] | None,
    images_per_request: int,
    concurrency: int,
    duration: float,
    timeout: float,
    headers: tuple[str, ...] = (),
) -> LoadResult:
    url = urlsplit(base_url)
    host, port = url.hostname, url.port or 80
    latencies: list[float] = []
    errors = 0
    count = 0
    stop = time.perf_counter() + duration

    async def worker(index: int) -> None:
        nonlocal errors, count
        connection = Connection(host, port)
        i = index
        try:
            while time.perf_counter() < stop:
                payload = json.dumps(body(i)).encode() if body is not None else b""
                head = _head(method, url.netloc, path, len(payload), headers)
                started = time.perf_counter()
                try:
                    status, _ = await asyncio.wait_for(connection.request(head, payload), timeout)
                    ok = status == 200
                except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                    ok = False
                    await connection.close()
                if ok:
                    latencies.append(time.perf_counter() - started)
                    count += 1
                else:
                    errors += 1
                i += concurrency
        finally:
            await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    seconds = time.perf_counter() - started
    return LoadResult(count, count * images_per_request, errors, seconds, latencies)


def run_load(base_url, method, path, body, images_per_request, concurrency, duration, timeout=120.0) -> LoadResult:
    return asyncio.run(_load(base_url, method, path, body, images_per_request, concurrency, duration, timeout))
