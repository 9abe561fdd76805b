"""Out-of-distribution assessment: is an image the kind of thing the model was trained on?

log p(x) alone cannot say (Nalisnick et al. 2019): a blank page is *more* likely than any digit,
because it is simple. The first number here is a likelihood ratio against a background model of
local texture only (Ren et al. 2019; Serra et al. 2020 use a compressor for the same purpose):

    score(x) = log p(x) - log p_background(x)

p_background is a causal context model, the kind a bilevel image coder (JBIG) uses: each pixel is
Bernoulli given the 10 pixels above and to its left, with probabilities counted on the training
digits. It explains strokes, edges and empty space as well as the digits do, but not the shape
of a digit; so the ratio is high for digits and low for blank pages, scribbles, reversed
polarity, noise, letters and other glyphs, whether their log p(x) is low or suspiciously high.

Every answer holds more of how the model sees an image, and a digit is typical in all of it at
once. The assessment takes six numbers per image (FEATURES):

    score                        the likelihood ratio above
    log p(x)                     noise lies hundreds of nats below every digit
    log(1 + ink)                 the number of ink pixels: too few or too many for a digit
    log(log p(x) - ELBO)         how far the posterior is from the encoder's guess of it
    log(1 + margin)              log p(x|y) of the best class minus the second best's
    KL(q(z|x,y) || p(z))         how far the encoder moves from the prior to explain the image

and measures how far they lie from the validation digits' as a Mahalanobis distance
(Lee et al. 2018 use it over a classifier's features): the centre and covariance are taken from the
first half of the held-out validation digits, and the distances of the second half are the
reference. The p-value is split conformal,

    p = (1 + #{reference distances >= distance}) / (m + 1),

so for an image drawn like the validation digits P(p <= alpha) <= alpha whatever the features'
joint law, and flagging p <= alpha holds the false-positive rate at alpha. Any one number far off
makes the distance large, so a scribble with an off-scale ratio is flagged as surely as an image
unusual in several numbers at once. A non-finite number (log p(x) = -inf) is as far as it gets.

The answer also carries each of score, log p(x) and ink's own p-value against all validation
digits, to say which of them is unusual; the flag uses only the combined p-value.

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
FEATURES = ("score", "log_px", "log1p_ink", "log_gap", "log1p_margin", "kl_z")
METHOD = (
    "Mahalanobis distance from the validation digits over six numbers per image (the likelihood ratio "
    "log p(x) - log p_background(x) against a 10-pixel causal context model, log p(x), log(1 + ink pixels), "
    "log(log p(x) - ELBO), log(1 + the margin of log p(x|y) between the two best classes), KL(q(z|x,y) || p(z))); "
    "centre and covariance from the first half of the validation reference, split-conformal p-value against "
    "the second half's distances"
)
SMALLEST_GAP = 1e-3  # nats: log p(x) - ELBO below this (estimation noise) counts as this


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


def features(
    log_px: np.ndarray,
    elbo: np.ndarray,
    kl_z: np.ndarray,
    log_px_y: np.ndarray,
    x: np.ndarray,
    shape: tuple[int, int],
    log_probs: np.ndarray,
) -> np.ndarray:
    """The numbers of FEATURES per image [N, 6] from an answer's log p(x) [N], ELBO [N], KL term of
    z [N] and per-class log p(x|y) [N, C] (nats; -inf or nan where there is none) and the binary
    images x [N, H*W] that were scored. A number that cannot be had is nan."""
    with np.errstate(invalid="ignore", divide="ignore"):
        score = log_px - background_log_prob(x, shape, log_probs)
        if log_px_y.shape[1] >= 2:
            best_two = np.sort(np.nan_to_num(log_px_y, nan=-np.inf), axis=1)[:, -2:]
            margin = best_two[:, 1] - best_two[:, 0]
        else:  # one class: nothing to choose between
            margin = np.zeros(len(log_px))
        gap = np.maximum(log_px - elbo, SMALLEST_GAP)
        values = np.stack(
            [score, log_px, np.log1p(ink_pixels(x)), np.log(gap), np.log1p(np.maximum(margin, 0.0)), kl_z], axis=1
        )
    return np.where(np.isfinite(values), values, np.nan)


def features_of_answers(
    answers: list[dict], x: np.ndarray, shape: tuple[int, int], log_probs: np.ndarray
) -> np.ndarray:
    """features() of /v1/log-likelihood's results (JSON numbers, null where not finite)."""

    def number(value: float | None) -> float:
        return np.nan if value is None else value

    return features(
        np.array([number(a["log_px"]) for a in answers]),
        np.array([number(a["elbo"]["value"]) for a in answers]),
        np.array([number(a["elbo"]["kl_z"]) for a in answers]),
        np.array([[number(v) for v in a["log_px_y"]] for a in answers]),
        x,
        shape,
        log_probs,
    )


@dataclass(frozen=True)
class Calibration:
    """What the assessment needs from the model directory's `ood` file, and what follows from it."""

    log_probs: np.ndarray  # [2, NUM_CONTEXTS] background model
    reference: np.ndarray  # [n, len(FEATURES)] the validation digits' numbers, in the order they were drawn
    center: np.ndarray  # [len(FEATURES)] mean of the first half's numbers
    precision: np.ndarray  # [len(FEATURES), len(FEATURES)] inverse of their covariance
    reference_distance: np.ndarray  # sorted distances of the second half [n - n // 2]
    marginals: tuple[np.ndarray, ...]  # sorted columns score, log_px, log1p_ink of all n

    @classmethod
    def fit(cls, log_probs: np.ndarray, reference: np.ndarray) -> Calibration:
        """Centre and covariance from the first half of `reference`, distances of the second half."""
        first, second = reference[: len(reference) // 2], reference[len(reference) // 2 :]
        usable = first[np.isfinite(first).all(axis=1)]
        if len(usable) < 2:
            raise ValueError(f"the first half of the reference has {len(usable)} finite rows (at least 2 needed)")
        center = usable.mean(axis=0)
        precision = np.linalg.pinv(np.cov(usable, rowvar=False))
        marginals = tuple(np.sort(np.nan_to_num(reference[:, j], nan=-np.inf)) for j in range(3))
        distances = np.sort(_mahalanobis(second, center, precision))
        return cls(log_probs, reference, center, precision, distances, marginals)

    @classmethod
    def load(cls, path: Path) -> Calibration:
        with np.load(path) as data:
            log_probs = np.asarray(data["log_probs"], np.float64)
            reference = np.asarray(data["reference"], np.float64)
        if log_probs.shape != (2, NUM_CONTEXTS) or reference.ndim != 2 or reference.shape[1] != len(FEATURES):
            raise ValueError(
                f"{path} holds a background model of shape {list(log_probs.shape)} (expected [2, {NUM_CONTEXTS}]) "
                f"and reference numbers of shape {list(reference.shape)} (expected [n, {len(FEATURES)}])"
            )
        return cls.fit(log_probs, reference)

    def distance(self, values: np.ndarray) -> np.ndarray:
        """Mahalanobis distance [N] of numbers [N, len(FEATURES)] from the centre; inf where one is nan."""
        return _mahalanobis(values, self.center, self.precision)


def _mahalanobis(values: np.ndarray, center: np.ndarray, precision: np.ndarray) -> np.ndarray:
    offset = values - center
    squared = np.einsum("ij,jk,ik->i", offset, precision, offset)
    return np.where(np.isfinite(values).all(axis=1), np.sqrt(np.maximum(squared, 0.0)), np.inf)


def assess(values: np.ndarray, ink: np.ndarray, calibration: Calibration, fpr: float) -> list[dict]:
    """Per image, from its numbers [N, len(FEATURES)] (features()) and ink pixels [N]: the score (nats),
    the distance, the p-values against validation digits and whether the image is flagged at
    false-positive rate `fpr`."""
    distance = calibration.distance(values)
    reference = calibration.reference_distance
    p = (1 + len(reference) - np.searchsorted(reference, distance, side="left")) / (1 + len(reference))
    lowest = np.nan_to_num(values, nan=-np.inf)
    p_score = _conformal(calibration.marginals[0], lowest[:, 0])
    p_log_px = _conformal(calibration.marginals[1], lowest[:, 1])
    p_ink = _conformal_two_sided(calibration.marginals[2], lowest[:, 2])
    nearly_empty = ink < MIN_INK_PIXELS
    return [
        {
            "score": _finite(values[i, 0]),
            "distance": _finite(distance[i]),
            "p_value": float(p[i]),
            "p_value_score": float(p_score[i]),
            "p_value_log_px": float(p_log_px[i]),
            "p_value_ink": float(p_ink[i]),
            "fpr": fpr,
            "nearly_empty": bool(nearly_empty[i]),
            "flagged": bool(p[i] <= fpr or nearly_empty[i]),
        }
        for i in range(len(values))
    ]


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
