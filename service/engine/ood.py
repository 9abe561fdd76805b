"""Out-of-distribution assessment: is an image the kind of thing the model was trained on?

log p(x) alone cannot say (Nalisnick et al. 2019): a blank page is *more* likely than any digit,
because it is simple. The first number here is a likelihood ratio against a background model of
local texture only (Ren et al. 2019; Serra et al. 2020 use a compressor for the same purpose):

    score(x) = log p(x) - log p_background(x)

p_background (service.engine.background) is a causal context model of local texture, counted on the
training images: it explains strokes, edges and empty space as well as they do, but not their
shapes; so the ratio is high for them and low for blank pages, scribbles, reversed polarity, noise,
letters and other glyphs, whether their log p(x) is low or suspiciously high.

Every answer holds more of how the model sees an image, and a digit is typical in all of it at
once. The assessment takes six numbers per image from the answer (DISTANCE_FEATURES):

    score                        the likelihood ratio above
    log p(x)                     noise lies hundreds of nats below every digit
    log(1 + ink)                 the number of ink pixels: too few or too many for a digit
    log(log p(x) - ELBO)         how far the posterior is from the encoder's guess of it
    log(1 + margin)              log p(x|y) of the best class minus the second best's
    KL(q(z|x,y) || p(z))         how far the encoder moves from the prior to explain the image

and measures how far they lie from the validation digits' as a Mahalanobis distance (Lee et al. 2018).

A model of digits sees a printed "S" or "o" as a fair 5 or 0, in all six numbers. The seventh is
the critic's (training.critic), a small network trained with outlier exposure (Hendrycks et al. 2019):
its log-odds that the image is a digit at all. A model of grey levels has no critic (weight 0).

The validation images are split in two. The first half gives the distance's centre and covariance
and ranks each image's distance and critic: p_d and p_c, continued past the half's extremes by an
exponential tail (_tail_share). The statistic -2 [(1 - w) log p_d + w log p_c], w the critic's weight,
is counted against the second half's statistics: p = (1 + #{reference >= statistic}) / (m + 1), a
split-conformal p-value, so flagging p <= alpha holds the false-positive rate on images drawn like the
validation ones at alpha, whatever the weight (docs/out-of-distribution.md). The explanatory p-values
of score, log p(x), ink and the critic do not enter the flag. An image with fewer than MIN_INK_PIXELS
ink pixels is flagged whatever its p-value (every MNIST digit has 15 or more); not so for a model of grey
levels, whose images may be dark all over (docs/decisions.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service.engine import background

MIN_INK_PIXELS = 10  # fewer: flagged as an empty page, and warned of (service.engine.pixels)
DISTANCE_FEATURES = ("score", "log_px", "log1p_ink", "log_gap", "log1p_margin", "kl_z")
FEATURES = (*DISTANCE_FEATURES, "critic")
CRITIC = FEATURES.index("critic")
EQUAL_WEIGHT = 0.5  # weighs the critic and the distance alike: ranks as Fisher's combination does
METHOD = (
    "weighted Fisher combination of two p-values against the first half of the validation reference: the Mahalanobis "
    "distance over six numbers per image (the likelihood ratio log p(x) - log p_background(x) against a 10-pixel "
    "causal context model, log p(x), log(1 + ink pixels), log(log p(x) - ELBO), log(1 + the margin of log p(x|y) "
    "between the two best classes), KL(q(z|x,y) || p(z))), and the critic's log-odds of a digit against anything "
    "else (a CNN trained with outlier exposure); split-conformal p-value of -2 [(1 - w) log p_d + w log p_c], w the "
    "critic's weight, against the second half's"
)
TAIL_SHARE = 0.01  # of the first half: the largest distances (lowest critics) whose excess sets the tail
SMALLEST_GAP = 1e-3  # nats: log p(x) - ELBO below this (estimation noise) counts as this


def _conformal(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The share of a sorted reference at or below each value, counting the value itself."""
    return (1 + np.searchsorted(reference, values, side="right")) / (1 + len(reference))


def _conformal_above(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The share of a sorted reference at or above each value, counting the value itself."""
    return (1 + len(reference) - np.searchsorted(reference, values, side="left")) / (1 + len(reference))


def _tail_share(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """_conformal_above, continued past the reference's largest value with an exponential tail
    (peaks over a threshold): beyond the largest, 1 / (n + 1) * exp(-(value - largest) / scale),
    the scale being the mean excess of the top TAIL_SHARE of the reference over the value below
    them. So an image far beyond every reference value gets a share far below 1 / (n + 1), not
    the same as one just beyond it. A reference too short to have a value below its top share
    has no tail to measure: its scale is 1."""
    share = _conformal_above(reference, values)
    top = max(2, int(np.ceil(TAIL_SHARE * len(reference))))
    if len(reference) <= top:
        scale = 1.0
    else:
        scale = float(np.mean(reference[-top:] - reference[-top - 1]))
    largest = reference[-1] if len(reference) else -np.inf
    with np.errstate(invalid="ignore", over="ignore"):
        beyond = np.exp(-(values - largest) / max(scale, 1e-12)) / (1 + len(reference))
    return np.where(values > largest, beyond, share)


def _conformal_two_sided(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Twice the smaller tail share of a sorted reference (at or below, at or above), at most 1."""
    return np.minimum(1.0, 2 * np.minimum(_conformal(reference, values), _conformal_above(reference, values)))


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
    critic: np.ndarray,
) -> np.ndarray:
    """The numbers of FEATURES per image [N, 7] from an answer's log p(x) [N], ELBO [N], KL term of
    z [N] and per-class log p(x|y) [N, C] (nats; -inf or nan where there is none), the binary
    images x [N, H*W] that were scored and the critic's log-odds [N]. A number that cannot be had
    is nan."""
    with np.errstate(invalid="ignore", divide="ignore"):
        score = log_px - background.log_prob(x, shape, log_probs)
        if log_px_y.shape[1] >= 2:
            best_two = np.sort(np.nan_to_num(log_px_y, nan=-np.inf), axis=1)[:, -2:]
            margin = best_two[:, 1] - best_two[:, 0]
        else:  # one class: nothing to choose between
            margin = np.zeros(len(log_px))
        gap = np.maximum(log_px - elbo, SMALLEST_GAP)
        values = np.stack(
            [score, log_px, np.log1p(ink_pixels(x)), np.log(gap), np.log1p(np.maximum(margin, 0.0)), kl_z, critic],
            axis=1,
        )
    return np.where(np.isfinite(values), values, np.nan)


@dataclass(frozen=True)
class Calibration:
    """What the assessment needs from the model directory's `ood` file, and what follows from it."""

    log_probs: np.ndarray  # the background model (service.engine.background)
    reference: np.ndarray  # [n, len(FEATURES)] the validation digits' numbers, in the order they were drawn
    center: np.ndarray  # [len(DISTANCE_FEATURES)] mean of the first half's numbers
    precision: np.ndarray  # [len(DISTANCE_FEATURES)] * 2 inverse of their covariance
    first_distance: np.ndarray  # sorted distances of the first half
    first_critic: np.ndarray  # sorted critic log-odds of the first half
    marginals: tuple[np.ndarray, ...]  # sorted columns score, log_px, log1p_ink, critic of all n
    critic_weight: float = EQUAL_WEIGHT  # w in the statistic, in [0, 1] (critic_weight_of)
    reference_statistic: np.ndarray = field(init=False)  # sorted statistics of the second half [n - n // 2]

    def __post_init__(self) -> None:
        object.__setattr__(self, "critic_weight", critic_weight_of(self.critic_weight))
        second = self.reference[len(self.reference) // 2 :]
        statistic = self.statistic(self.distance(second), second[:, CRITIC])
        object.__setattr__(self, "reference_statistic", np.sort(statistic))

    @classmethod
    def fit(cls, log_probs: np.ndarray, reference: np.ndarray, *, critic_weight: float = EQUAL_WEIGHT) -> Calibration:
        """Centre, covariance and ranks from the first half of `reference`, statistics of the second."""
        first = reference[: len(reference) // 2]
        distances = first[:, : len(DISTANCE_FEATURES)]
        usable = distances[np.isfinite(distances).all(axis=1)]
        if len(usable) < 2:
            raise ValueError(f"the first half of the reference has {len(usable)} finite rows (at least 2 needed)")
        center = usable.mean(axis=0)
        precision = np.linalg.pinv(np.cov(usable, rowvar=False))
        marginals = tuple(np.sort(np.nan_to_num(reference[:, j], nan=-np.inf)) for j in (0, 1, 2, CRITIC))
        first_distance = np.sort(_mahalanobis(first[:, : len(DISTANCE_FEATURES)], center, precision))
        first_critic = np.sort(np.nan_to_num(first[:, CRITIC], nan=-np.inf))
        return cls(log_probs, reference, center, precision, first_distance, first_critic, marginals, critic_weight)

    @classmethod
    def load(cls, path: Path, *, critic_weight: float) -> Calibration:
        with np.load(path) as data:
            log_probs = np.asarray(data["log_probs"], np.float64)
            reference = np.asarray(data["reference"], np.float64)
        if background.kind(log_probs) is None or reference.ndim != 2 or reference.shape[1] != len(FEATURES):
            raise ValueError(
                f"{path} holds a background model of shape {list(log_probs.shape)} (expected {background.SHAPES}) "
                f"and reference numbers of shape {list(reference.shape)} (expected [n, {len(FEATURES)}])"
            )
        return cls.fit(log_probs, reference, critic_weight=critic_weight)

    def distance(self, values: np.ndarray) -> np.ndarray:
        """Mahalanobis distance [N] of numbers [N, len(FEATURES)] from the centre over DISTANCE_FEATURES;
        inf where one of them is nan."""
        return _mahalanobis(values[:, : len(DISTANCE_FEATURES)], self.center, self.precision)

    def statistic(self, distance: np.ndarray, critic: np.ndarray) -> np.ndarray:
        """-2 [(1 - w) log p_d + w log p_c] [N] of distances [N] (distance()) and critic log-odds [N]:
        their p-values against the first half, w the critic's weight (-log p_d - log p_c at equal weight)."""
        w, statistic = self.critic_weight, np.zeros(len(distance))
        with np.errstate(divide="ignore"):  # a weight of 0 ignores its evidence even where it is infinite
            if w < 1.0:
                statistic += 2 * (1 - w) * -np.log(_tail_share(self.first_distance, distance))
            if w > 0.0:
                p_critic = _tail_share(-self.first_critic[::-1], -np.nan_to_num(critic, nan=-np.inf))
                statistic += 2 * w * -np.log(p_critic)
        return statistic


def critic_weight_of(value: object) -> float:
    """A critic's weight as a float; ValueError, saying what is wrong, unless it is a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0.0 <= value <= 1.0:
        raise ValueError(
            f"the critic's weight must be a number in [0, 1] (got {value!r}); {EQUAL_WEIGHT} weighs the critic and "
            "the distance alike"
        )
    return float(value)


def _mahalanobis(values: np.ndarray, center: np.ndarray, precision: np.ndarray) -> np.ndarray:
    offset = values - center
    squared = np.einsum("ij,jk,ik->i", offset, precision, offset)
    return np.where(np.isfinite(values).all(axis=1), np.sqrt(np.maximum(squared, 0.0)), np.inf)


@dataclass
class Verdicts:
    """The out-of-distribution assessment of N images, each [N]: the score (nats), the distance, the
    critic's log-odds (nan where not finite), the p-value the flag uses and the explanations' p-values,
    whether each is nearly empty and flagged; `fpr` is the false-positive rate of the flags."""

    score: np.ndarray
    distance: np.ndarray
    critic: np.ndarray
    p_value: np.ndarray
    p_value_score: np.ndarray
    p_value_log_px: np.ndarray
    p_value_ink: np.ndarray
    p_value_critic: np.ndarray
    nearly_empty: np.ndarray
    flagged: np.ndarray
    fpr: float


def assess(values: np.ndarray, ink: np.ndarray, calibration: Calibration, fpr: float) -> Verdicts:
    """The verdicts of images from their numbers [N, len(FEATURES)] (features()) and ink pixels [N],
    against validation digits, flagged at false-positive rate `fpr`."""
    distance = calibration.distance(values)
    p = _conformal_above(calibration.reference_statistic, calibration.statistic(distance, values[:, CRITIC]))
    lowest = np.nan_to_num(values, nan=-np.inf)
    binary = background.kind(calibration.log_probs) == "binary"  # grey levels: the p-value alone flags
    nearly_empty = ink < MIN_INK_PIXELS if binary else np.zeros(len(values), dtype=bool)
    return Verdicts(
        score=values[:, 0],
        distance=distance,
        critic=values[:, CRITIC],
        p_value=p,
        p_value_score=_conformal(calibration.marginals[0], lowest[:, 0]),
        p_value_log_px=_conformal(calibration.marginals[1], lowest[:, 1]),
        p_value_ink=_conformal_two_sided(calibration.marginals[2], lowest[:, 2]),
        p_value_critic=_conformal(calibration.marginals[3], lowest[:, CRITIC])
        if np.isfinite(calibration.marginals[3]).any()
        else np.full(len(values), np.nan),  # no critic (a model of grey levels)
        nearly_empty=nearly_empty,
        flagged=(p <= fpr) | nearly_empty,
        fpr=fpr,
    )


def auroc(inliers: np.ndarray, outliers: np.ndarray) -> float:
    """P(outlier > inlier) + P(tie) / 2 (the Mann-Whitney statistic), for scores where higher = more unusual."""
    inliers = np.sort(inliers)
    below = np.searchsorted(inliers, outliers, side="left")
    at_or_below = np.searchsorted(inliers, outliers, side="right")
    return float(np.mean((below + at_or_below) / 2) / len(inliers))
