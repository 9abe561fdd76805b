"""The benchmarks' closed-loop HTTP load generator: `concurrency` workers, each on its own keep-alive
connection, sending its next request as soon as the last one is answered, for `duration` seconds
(run_load) or while the caller's condition holds (load). It speaks just enough HTTP/1.1 to stay cheap:
on a machine whose cores the server shares, a heavy client (a pooled general-purpose one costs a
millisecond or more per request and grows with the pool) would measure itself.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np

CONCURRENCY = (1, 8, 32, 64)


@dataclass
class LoadResult:
    images_per_request: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # of the answers 200
    errors: int = 0  # any other answer, or a transport error
    statuses: Counter = field(default_factory=Counter)  # every request's status, a transport error's by name

    @property
    def requests(self) -> int:  # answered 200
        return len(self.latencies)

    @property
    def images(self) -> int:
        return self.requests * self.images_per_request

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

    async def request(self, head: bytes, body: bytes) -> tuple[int, dict[bytes, bytes]]:
        """The answer's status and headers (names in lower case); its body is read and dropped."""
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
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                await self.reader.readexactly(size + 2)
            await self.reader.readuntil(b"\r\n")
        else:
            await self.reader.readexactly(int(headers.get(b"content-length", b"0")))
        if headers.get(b"connection", b"").lower() == b"close":
            await self.close()
        return status, headers

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _head(method: str, host: str, path: str, length: int, headers: tuple[str, ...] = ()) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Accept: application/json", *headers]
    if method != "GET":
        lines += ["Content-Type: application/json", f"Content-Length: {length}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def until(seconds: float) -> Callable[[int], bool]:
    """more(i) of a load that runs `seconds` from now."""
    stop = time.perf_counter() + seconds
    return lambda i: time.perf_counter() < stop


async def load(
    base_url: str,
    request: Callable[[int], tuple[str, str, dict | None]],
    concurrency: int,
    more: Callable[[int], bool],
    images_per_request: int = 1,
    timeout: float = 120.0,
    headers: tuple[str, ...] = (),
    record: Callable[[float, float, int | str, dict], None] | None = None,
) -> LoadResult:
    """Requests i = 0, 1, ... as request(i) gives them (method, path, JSON body or None), sent by `concurrency`
    workers in turn while more(i) holds for the next; each answer also to record(start, latency, status,
    headers) where given, the status a transport error's name where none came."""
    url = urlsplit(base_url)
    result = LoadResult(images_per_request)
    issued = 0

    async def worker() -> None:
        nonlocal issued
        connection = Connection(url.hostname, url.port or 80)
        try:
            while more(issued):
                method, path, body = request(issued)
                issued += 1
                payload = json.dumps(body).encode() if body is not None else b""
                head = _head(method, url.netloc, path, len(payload), headers)
                started = time.perf_counter()
                try:
                    status, answer = await asyncio.wait_for(connection.request(head, payload), timeout)
                except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as error:
                    status, answer = type(error).__name__, {}
                    await connection.close()
                latency = time.perf_counter() - started
                result.statuses[str(status)] += 1
                if status == 200:
                    result.latencies.append(latency)
                else:
                    result.errors += 1
                if record is not None:
                    record(started, latency, status, answer)
        finally:
            await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result


def run_load(base_url, method, path, body, images_per_request, concurrency, duration, timeout=120.0) -> LoadResult:
    """A load of `duration` seconds on one path, body(i) the i-th request's JSON body (None: no body)."""
    request = lambda i: (method, path, body(i) if body is not None else None)  # noqa: E731
    return asyncio.run(load(base_url, request, concurrency, until(duration), images_per_request, timeout))
