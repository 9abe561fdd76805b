"""The model calls the endpoints make, run directly in worker threads or gathered by dynamic batching.

A Batcher gathers concurrent small calls into one model call: when the model is free it takes the first
call waiting and what is queued behind it up to `max_size` units, without waiting for more, runs the
batch in one worker thread (the event loop never runs model work), and hands each caller its own slice.
Calls that cannot share a run (a different `key`, e.g. another K) wait for the next batch.
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

from service import telemetry
from service.failures import Overloaded
from service.settings import Settings

DECODER_BATCH_ROWS = 256  # most rows gathered into one decoder call (a larger call runs alone)


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
        max_queue: int,
        size: Callable[[Any], int] = lambda item: 1,
        key: Callable[[Any], Any] = lambda item: None,
        on_batch: Callable[[int], None] | None = None,
    ):
        self.run_batch = run_batch
        self.max_size = max_size
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
        with telemetry.span("batcher.wait", size=pending.size, waiting=self.waiting):  # its wait and its batch's run
            return await future

    def _queued(self) -> _Pending | None:
        if self._deferred:
            return self._deferred.popleft()
        return self._queue.get_nowait() if not self._queue.empty() else None

    async def _gather(self) -> list[_Pending]:
        """The first call to come and what is queued behind it that fits: no waiting for more."""
        first = self._queued() or await self._queue.get()
        batch, used = [first], first.size
        skipped = []
        while used < self.max_size:
            pending = self._queued()
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


async def in_thread(fn, *args):
    """fn(*args) in a worker thread. Cancelled meanwhile, it waits for the thread to end before it lets
    the cancellation through, so that admission's place and the version's hold are given up only once
    the model has stopped computing (at most one call later)."""
    call = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(call)
    except asyncio.CancelledError:
        await asyncio.wait({call})
        raise


class ModelCalls:
    """`score` (the scorer graph) and `decode` (the decoder graph), awaitable from the event loop.

    Batching pays for small calls only: a scorer call that alone fills a quarter of a batch
    (a quarter of CVAE_SCORE_CHUNK_ROWS decoder passes, e.g. one image at K >= 52) runs at once
    in its own thread, so that large calls run side by side instead of queueing for one batch
    at a time. A batch takes what is queued when the model is free, without waiting for more.
    """

    def __init__(self, model, settings: Settings, on_call=None, batching: bool = True):
        """`model` is a loaded service.engine.runtime.Model (or anything with its log_weights and decode);
        `on_call(graph, rows, batched)` is told of every model call; `batching` False: every call runs
        on its own (scoring outside the service, which has no concurrent calls to gather)."""
        self.model = model
        self.on_call = on_call
        self.batching = batching
        self.direct_rows = max(1, settings.score_chunk_rows // 4)
        self._scorer = Batcher(
            self._score_batch,
            max_size=settings.score_chunk_rows,
            max_queue=settings.max_queue,
            size=lambda item: item[2].shape[0] * item[2].shape[1],  # K x rows decoder passes
            key=lambda item: item[2].shape[0],  # calls share a run only with the same K
            on_batch=on_call and (lambda size: on_call("scorer", size, True)),
        )
        self._decoder = Batcher(
            self._decode_batch,
            max_size=DECODER_BATCH_ROWS,
            max_queue=settings.max_queue,
            size=lambda item: len(item[0]),
            on_batch=on_call and (lambda size: on_call("decoder", size, True)),
        )

    def start(self) -> None:
        if self.batching:
            self._scorer.start()
            self._decoder.start()

    async def stop(self) -> None:
        if self.batching:
            await self._scorer.stop()
            await self._decoder.stop()

    async def score(self, x: np.ndarray, y: np.ndarray, eps: np.ndarray):
        """x [R, 784], y [R], eps [K, R, D] -> log_w, log_px_z [K, R], KL [R]."""
        batched = self.batching and eps.shape[0] * eps.shape[1] < self.direct_rows
        with telemetry.span("model.call", graph="scorer", rows=eps.shape[1], K=eps.shape[0], batched=batched):
            if batched:
                return await self._scorer.submit((x, y, eps))
            if self.on_call:
                self.on_call("scorer", eps.shape[0] * eps.shape[1], False)
            return await in_thread(self.model.log_weights, x, y, eps)

    async def decode(self, z: np.ndarray, y: np.ndarray) -> np.ndarray:
        """z [N, D], y [N] -> logits [N, 784]."""
        with telemetry.span("model.call", graph="decoder", rows=len(z), batched=self.batching):
            if self.batching:
                return await self._decoder.submit((z, y))
            if self.on_call:
                self.on_call("decoder", len(z), False)
            return await in_thread(self.model.decode, z, y)

    def _score_batch(self, items: list) -> list:
        x, bounds = concat_rows([item[0] for item in items], axis=0)
        y, _ = concat_rows([item[1] for item in items], axis=0)
        eps, _ = concat_rows([item[2] for item in items], axis=1)
        log_w, lpx_z, kl = self.model.log_weights(x, y, eps)
        return list(zip(np.split(log_w, bounds, axis=1), np.split(lpx_z, bounds, axis=1), np.split(kl, bounds)))

    def _decode_batch(self, items: list) -> list:
        z, bounds = concat_rows([item[0] for item in items], axis=0)
        y, _ = concat_rows([item[1] for item in items], axis=0)
        return np.split(self.model.decode(z, y), bounds)
