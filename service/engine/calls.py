"""The model calls the endpoints make, run directly in worker threads or through dynamic batchers."""

from __future__ import annotations

import asyncio

import numpy as np

from service import tracing
from service.engine.batching import Batcher, concat_rows
from service.settings import Settings

DECODER_BATCH_ROWS = 256  # most rows gathered into one decoder call (a larger call runs alone)


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
            max_wait=0.0,
            max_queue=settings.max_queue,
            size=lambda item: item[2].shape[0] * item[2].shape[1],  # K x rows decoder passes
            key=lambda item: item[2].shape[0],  # calls share a run only with the same K
            on_batch=on_call and (lambda size: on_call("scorer", size, True)),
        )
        self._decoder = Batcher(
            self._decode_batch,
            max_size=DECODER_BATCH_ROWS,
            max_wait=0.0,
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
        with tracing.span("model.call", graph="scorer", rows=eps.shape[1], K=eps.shape[0], batched=batched):
            if batched:
                return await self._scorer.submit((x, y, eps))
            if self.on_call:
                self.on_call("scorer", eps.shape[0] * eps.shape[1], False)
            return await in_thread(self.model.log_weights, x, y, eps)

    async def decode(self, z: np.ndarray, y: np.ndarray) -> np.ndarray:
        """z [N, D], y [N] -> logits [N, 784]."""
        with tracing.span("model.call", graph="decoder", rows=len(z), batched=self.batching):
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
