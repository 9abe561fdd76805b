"""Dynamic batching: concurrent small calls gathered into one model call.

A Batcher drains its queue until `max_size` units or `max_wait` seconds,
runs the batch in one worker thread (the event loop never runs model work),
and hands each caller its own slice. Items that cannot share a call (a
different `key`, e.g. another K) wait for the next batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service import tracing
from service.failures import Overloaded

log = logging.getLogger("cvae.batching")


@dataclass
class _Pending:
    item: Any
    size: int
    key: Any
    future: asyncio.Future = field(repr=False)


class Batcher:
    def __init__(
        self,
        run_batch: Callable[[list[Any]], Sequence[Any]],
        max_size: int,
        max_wait: float,
        max_queue: int,
        size: Callable[[Any], int] = lambda item: 1,
        key: Callable[[Any], Any] = lambda item: None,
        on_batch: Callable[[int], None] | None = None,
    ):
        self.run_batch = run_batch
        self.max_size = max_size
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.size = size
        self.key = key
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Pending] | None = None
        self._deferred: deque[_Pending] = deque()
        self._task: asyncio.Task | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="batcher")

    @property
    def waiting(self) -> int:
        return (self._queue.qsize() if self._queue else 0) + len(self._deferred)

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._fail_waiting(RuntimeError("the service is shutting down"))
        self._executor.shutdown(wait=False)

    def _fail_waiting(self, error: BaseException) -> None:
        """Answer every queued call with `error`, so that no caller waits forever."""
        waiting = list(self._deferred)
        self._deferred.clear()
        while self._queue is not None and not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        for pending in waiting:
            if not pending.future.done():
                pending.future.set_exception(error)

    async def submit(self, item: Any) -> Any:
        if self._queue is None:
            raise RuntimeError("the batcher is not running (not started, stopped, or failed)")
        if self.waiting >= self.max_queue:
            raise Overloaded(f"{self.waiting} model calls are already waiting")
        future = asyncio.get_running_loop().create_future()
        pending = _Pending(item, self.size(item), self.key(item), future)
        self._queue.put_nowait(pending)
        with tracing.span("batcher.wait", size=pending.size, waiting=self.waiting):  # its wait and its batch's run
            return await future

    async def _next(self, timeout: float | None) -> _Pending | None:
        if self._deferred:
            return self._deferred.popleft()
        if timeout is None:
            return await self._queue.get()
        if timeout <= 0:
            return self._queue.get_nowait() if not self._queue.empty() else None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    async def _gather(self) -> list[_Pending]:
        loop = asyncio.get_running_loop()
        first = await self._next(None)
        batch, used = [first], first.size
        deadline = loop.time() + self.max_wait
        skipped = []
        while used < self.max_size:
            pending = await self._next(deadline - loop.time())
            if pending is None:
                break
            if pending.key != first.key or used + pending.size > self.max_size:
                skipped.append(pending)
                if len(skipped) > 64:
                    break
                continue
            batch.append(pending)
            used += pending.size
        self._deferred.extendleft(reversed(skipped))
        return batch

    async def _loop(self) -> None:
        try:
            await self._serve()
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # never leave callers waiting on a dead loop
            log.exception("the batcher stopped")
            self._fail_waiting(error)
            self._queue = None  # later submits fail at once instead of hanging
            raise

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            live = [p for p in batch if not p.future.done()]
            if not live:
                continue
            if self.on_batch:
                self.on_batch(sum(p.size for p in live))
            try:
                results = await loop.run_in_executor(self._executor, self.run_batch, [p.item for p in live])
            except Exception as error:  # hand the failure to every caller of this batch
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(error)
                continue
            for p, result in zip(live, results, strict=True):
                if not p.future.done():
                    p.future.set_result(result)


def concat_rows(parts: list[np.ndarray], axis: int) -> tuple[np.ndarray, list[int]]:
    """Concatenate along `axis` and return the split points to undo it."""
    bounds = np.cumsum([p.shape[axis] for p in parts])[:-1].tolist()
    return np.concatenate(parts, axis=axis), bounds
