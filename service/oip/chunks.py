"""One run of a graph on a request's tensors, in chunks of at most `chunk_rows` rows, so that the
memory a request takes is bounded by the settings however large its tensors.

A row is one pass of the network: N of the encoder or decoder, K x N decoder passes of the scorer.
Chunks split N, and K too where K alone exceeds a chunk; each output is put together along the
dimensions its manifest shape names, so that it is the unchunked run's, bit for bit. Where K is
split, an output without K (the scorer's kl: the mean over K of log q(z|x,y) - log p(z), or the
closed form that is the same for every K) is the mean of the chunks' values weighed by their K:
bit for bit where it is the same for every K, else to float32 rounding.
Knows nothing of HTTP.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import numpy as np

Call = Callable[[list[str], dict[str, np.ndarray]], Awaitable[list[np.ndarray]]]
SPLIT = ("N", "K")  # the named dimensions a chunk may split: images, and the scorer's samples


def chunks(sizes: dict[str, int], chunk_rows: int) -> list[dict[str, slice]]:
    """Slices of N (and of K) that cover every row once, at most `chunk_rows` rows each."""
    n, k = sizes["N"], sizes.get("K", 1)
    k_per = min(k, chunk_rows)
    n_per = max(1, chunk_rows // k_per)
    return [
        {"N": slice(n0, min(n, n0 + n_per)), **({"K": slice(k0, min(k, k0 + k_per))} if "K" in sizes else {})}
        for n0 in range(0, n, n_per)
        for k0 in range(0, k, k_per)
    ]


def _index(dims: list, chunk: dict[str, slice]) -> tuple:
    """The part of a tensor of shape `dims` (a manifest's) that a chunk covers."""
    return tuple(chunk.get(d, slice(None)) if isinstance(d, str) else slice(None) for d in dims)


async def run(
    call: Call, graph: dict, wanted: list[str], feeds: dict[str, np.ndarray], sizes: dict[str, int], chunk_rows: int
) -> list[np.ndarray]:
    """The outputs `wanted` of the graph (`graph`: its manifest entry; `sizes`: its named dimensions)
    on `feeds`, from `call(names, feeds)` on each chunk in turn."""
    if math.prod(sizes.values()) <= chunk_rows or set(sizes) - set(SPLIT) or "N" not in sizes:
        return list(await call(wanted, feeds))
    dims, k = graph["outputs"], sizes.get("K", 1)
    over_k = {name for name in wanted if k > chunk_rows and "K" not in dims[name]}  # kl, when K is split
    out: dict[str, np.ndarray] = {}
    for chunk in chunks(sizes, chunk_rows):
        part = {name: value[_index(graph["inputs"][name], chunk)] for name, value in feeds.items()}
        for name, value in zip(wanted, await call(wanted, part)):
            if name not in out:
                shape = [sizes[d] if isinstance(d, str) else d for d in dims[name]]
                out[name] = np.zeros(shape, np.float64) if name in over_k else np.empty(shape, value.dtype)
            if name in over_k:  # a mean over K (or the same for every K), weighed by this chunk's K
                out[name][_index(dims[name], chunk)] += value.astype(np.float64) * (chunk["K"].stop - chunk["K"].start)
            else:
                out[name][_index(dims[name], chunk)] = value
    return [(out[name] / k).astype(np.float32) if name in over_k else out[name] for name in wanted]
