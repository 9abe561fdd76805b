"""Out-of-distribution assessment: is an image the kind of thing the model was trained on?

log p(x) alone cannot say (Nalisnick et al. 2019): a blank page is *more* likely than any digit,
because it is simple. The score here is a likelihood ratio against a background model of local
texture only (Ren et al. 2019; Serra et al. 2020 use a compressor for the same purpose):

    score(x) = log p(x) - log p_background(x)

p_background is a causal context model, the kind a bilevel image coder (JBIG) uses: each pixel is
Bernoulli given the 10 pixels above and to its left, with probabilities counted on the training
digits. It explains strokes, edges and empty space as well as the digits do, but not the shape
of a digit; so the ratio is high for digits and low for blank pages, scribbles, reversed
polarity, noise, letters and other glyphs, whether their log p(x) is low or suspiciously high.

Digits also have a typical range of log p(x) and of ink: noise that both models find equally
improbable lies hundreds of nats below every digit, and a solid blob carries more ink than any
digit. So three conformal p-values are taken against held-out validation digits, scored at export
(the `ood` file of the manifest):

    p_score  = (1 + #{validation scores <= score}) / (n + 1)
    p_log_px = (1 + #{validation log p(x) <= log p(x)}) / (n + 1)
    p_ink    = min(1, 2 min((1 + #{validation ink <= ink}) / (n + 1), (1 + #{validation ink >= ink}) / (n + 1)))

(ink: the number of ink pixels, too few or too many) and combined by Bonferroni,
p = min(1, 3 min(p_score, p_log_px, p_ink)). For an image drawn like the validation digits
P(p <= alpha) <= alpha, so flagging p <= alpha holds the false-positive rate at alpha (a little
below it, as the tests agree more often than not).

An image with fewer than MIN_INK_PIXELS ink pixels is flagged whatever its p-value: every MNIST
training digit has at least 15, so the rule flags no digit, and it catches the nearly blank pages
whose estimated log p(x) is noisy enough to reach the digits' range.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.images import MIN_INK_PIXELS

# (row offset, column offset) of the causal neighbours, as in JBIG's three-line template
TEMPLATE = ((-2, -1), (-2, 0), (-2, 1), (-1, -2), (-1, -1), (-1, 0), (-1, 1), (-1, 2), (0, -2), (0, -1))
NUM_CONTEXTS = 2 ** len(TEMPLATE)
METHOD = (
    "likelihood ratio log p(x) - log p_background(x) against a 10-pixel causal context model, log p(x), and the "
    "number of ink pixels (two-sided); conformal p-values against validation digits, combined by Bonferroni"
)


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


def background_log_prob(x: np.ndarray, shape: tuple[int, int], log_probs: np.ndarray) -> np.ndarray:
    """log p_background(x) [N] of binary images x [N, H*W] (nats)."""
    ctx = contexts(x, shape)
    ink = x > 0.5
    return np.where(ink, log_probs[0][ctx], log_probs[1][ctx]).sum(axis=1)


def _conformal(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The share of a sorted reference at or below each value, counting the value itself."""
    return (1 + np.searchsorted(reference, values, side="right")) / (1 + len(reference))


def _conformal_two_sided(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Twice the smaller tail share of a sorted reference (at or below, at or above), at most 1."""
    above = (1 + len(reference) - np.searchsorted(reference, values, side="left")) / (1 + len(reference))
    return np.minimum(1.0, 2 * np.minimum(_conformal(reference, values), above))


def ink_pixels(x: np.ndarray) -> np.ndarray:
    """The number of ink pixels [N] of binary images x [N, H*W]."""
    return (x > 0.5).sum(axis=1)


@dataclass(frozen=True)
class Calibration:
    """What the assessment needs from the model directory's `ood` file."""

    log_probs: np.ndarray  # [2, NUM_CONTEXTS] background model
    reference_score: np.ndarray  # sorted scores of the validation digits [n]
    reference_log_px: np.ndarray  # sorted log p(x) of the same digits [n]
    reference_ink: np.ndarray  # sorted numbers of ink pixels of the same digits [n]

    @classmethod
    def load(cls, path: Path) -> Calibration:
        with np.load(path) as data:
            log_probs = np.asarray(data["log_probs"], np.float64)
            keys = ("reference_score", "reference_log_px", "reference_ink")
            references = [np.sort(np.asarray(data[key], np.float64)) for key in keys]
        sizes = {len(r) for r in references}
        if log_probs.shape != (2, NUM_CONTEXTS) or len(sizes) != 1 or 0 in sizes:
            raise ValueError(
                f"{path} holds a background model of shape {list(log_probs.shape)} (expected [2, {NUM_CONTEXTS}]) "
                f"and {[len(r) for r in references]} reference values (expected the same number, at least one)"
            )
        return cls(log_probs, *references)


def assess(
    log_px: np.ndarray, x: np.ndarray, shape: tuple[int, int], calibration: Calibration, fpr: float
) -> list[dict]:
    """Per image: the score (nats), the p-values against validation digits and whether the image is
    flagged at false-positive rate `fpr`. A non-finite log p(x) is as unlike the digits as it gets."""
    scores = log_px - background_log_prob(x, shape, calibration.log_probs)
    lowest = -np.inf
    p_score = _conformal(calibration.reference_score, np.nan_to_num(scores, nan=lowest))
    p_log_px = _conformal(calibration.reference_log_px, np.nan_to_num(log_px, nan=lowest))
    ink = ink_pixels(x)
    p_ink = _conformal_two_sided(calibration.reference_ink, ink)
    p = np.minimum(1.0, 3 * np.minimum(np.minimum(p_score, p_log_px), p_ink))
    nearly_empty = ink < MIN_INK_PIXELS
    return [
        {
            "score": float(scores[i]) if np.isfinite(scores[i]) else None,
            "p_value": float(p[i]),
            "p_value_score": float(p_score[i]),
            "p_value_log_px": float(p_log_px[i]),
            "p_value_ink": float(p_ink[i]),
            "fpr": fpr,
            "nearly_empty": bool(nearly_empty[i]),
            "flagged": bool(p[i] <= fpr or nearly_empty[i]),
        }
        for i in range(len(scores))
    ]
