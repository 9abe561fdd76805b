"""The background model of the out-of-distribution score (service.engine.ood): a causal context model of local
texture, the kind an image coder uses. Each pixel is predicted from its neighbours above and to its left, with
probabilities counted on the training images (training.calibrate):

- binary pixels (a Bernoulli model): the context is the 10 pixels of JBIG's three-line template, TEMPLATE;
- grey levels (a model of 256 levels): the four neighbours GREY_TEMPLATE, each cut to GREY_BINS bands, and
  the pixel one of the LEVELS levels.
"""

from __future__ import annotations

import numpy as np

# (row offset, column offset) of the causal neighbours, as in JBIG's three-line template
TEMPLATE = ((-2, -1), (-2, 0), (-2, 1), (-1, -2), (-1, -1), (-1, 0), (-1, 1), (-1, 2), (0, -2), (0, -1))
NUM_CONTEXTS = 2 ** len(TEMPLATE)
GREY_TEMPLATE = ((-1, -1), (-1, 0), (-1, 1), (0, -1))  # a grey level's causal neighbours
GREY_BINS = 4  # bands each neighbour's level is cut into: 0-63, 64-127, 128-191, 192-255
GREY_CONTEXTS = GREY_BINS ** len(GREY_TEMPLATE)
LEVELS = 256
SHAPES = {"binary": (2, NUM_CONTEXTS), "grey": (GREY_CONTEXTS, LEVELS)}  # of each kind's log-probabilities
TEMPLATES = {"binary": TEMPLATE, "grey": GREY_TEMPLATE}


def kind_for(likelihood: str) -> str:
    """The pixels a model of this likelihood scores, and so its background model's kind: 'binary' or 'grey'."""
    return "binary" if likelihood == "bernoulli" else "grey"


def contexts(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Binary images x [N, H*W] -> the context of every pixel [N, H*W], an integer below NUM_CONTEXTS.
    Pixels outside the image count as background."""
    rows, cols = shape
    image = x.reshape(-1, rows, cols) > 0.5
    padded = np.pad(image, ((0, 0), (2, 0), (2, 2)))  # [N, H + 2, W + 4]
    index = np.zeros(image.shape, dtype=np.int64)
    for bit, (dr, dc) in enumerate(TEMPLATE):
        index |= padded[:, 2 + dr : 2 + dr + rows, 2 + dc : 2 + dc + cols].astype(np.int64) << bit
    return index.reshape(len(image), -1)


def context_log_probs(ink_counts: np.ndarray, totals: np.ndarray, prior: float = 0.5) -> np.ndarray:
    """log p(pixel = 1 | context) and log p(pixel = 0 | context) [2, NUM_CONTEXTS] from counts,
    with the Krichevsky-Trofimov estimate (add `prior` to both outcomes)."""
    p_ink = (ink_counts + prior) / (totals + 2 * prior)
    return np.log(np.stack([p_ink, 1.0 - p_ink]))


def grey_contexts(x: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Grey images x [N, H*W] in [0, 1] -> each pixel's level [N, H*W] (0-255) and its context [N, H*W], an
    integer below GREY_CONTEXTS. Pixels outside the image count as level 0."""
    rows, cols = shape
    levels = np.rint(np.clip(x, 0.0, 1.0) * (LEVELS - 1)).astype(np.int64).reshape(-1, rows, cols)
    padded = np.pad(levels * GREY_BINS // LEVELS, ((0, 0), (1, 0), (1, 1)))  # [N, H + 1, W + 2]
    index = np.zeros(levels.shape, dtype=np.int64)
    for place, (dr, dc) in enumerate(GREY_TEMPLATE):
        index += padded[:, 1 + dr : 1 + dr + rows, 1 + dc : 1 + dc + cols] * GREY_BINS**place
    return levels.reshape(len(levels), -1), index.reshape(len(levels), -1)


def grey_log_probs(counts: np.ndarray, prior: float = 0.5) -> np.ndarray:
    """log p(level | context) [GREY_CONTEXTS, LEVELS] from counts of the same shape, with `prior` added to each."""
    return np.log((counts + prior) / (counts.sum(axis=1, keepdims=True) + LEVELS * prior))


def kind(log_probs: np.ndarray) -> str | None:
    """'grey' or 'binary': which pixels a background model's log-probabilities are of (None: neither shape)."""
    return {SHAPES["grey"]: "grey", SHAPES["binary"]: "binary"}.get(log_probs.shape)


def log_prob(x: np.ndarray, shape: tuple[int, int], log_probs: np.ndarray) -> np.ndarray:
    """log p_background(x) [N] (nats) of images x [N, H*W]: binary ones, or grey levels in [0, 1] (k/255) for a
    background model of grey levels."""
    if kind(log_probs) == "grey":
        levels, ctx = grey_contexts(x, shape)
        return log_probs[ctx, levels].sum(axis=1)
    ctx = contexts(x, shape)
    ink = x > 0.5
    return np.where(ink, log_probs[0][ctx], log_probs[1][ctx]).sum(axis=1)
