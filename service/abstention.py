"""When /v1/classify abstains: the answer's class should not be relied on.

p(y|x) is Bayes' rule over the generative model's per-class likelihoods, and stays the answer.
Whether to rely on its top class is decided from three pieces of evidence, each a reason:

    out_of_distribution   the image was flagged as unlike the training digits (service.ood)
    low_probability       p(predicted|x) < min_probability: the model is unsure between classes
    critic_disagrees      the critic (training.critic), a discriminative network trained on the same
                          digits, gives the predicted class a probability below min_probability

The critic is a second opinion made another way: a convolutional classifier, not a likelihood.
Where the critic doubts the class Bayes' rule picked, the answer is often wrong: on validation
digits most of Bayes' rule's errors are among those few images. One threshold serves both: an
answer is kept when both models give its class at least min_probability. Models whose critic graph
has no digit probabilities abstain for the first two reasons only.
"""

from __future__ import annotations

import numpy as np

REASONS = ("out_of_distribution", "low_probability", "critic_disagrees")
RULE = (
    "abstain when flagged, when p(predicted|x) < min_probability, or when the critic's probability of the "
    "predicted class < min_probability"
)
# the min_probability curves report: finer where the defaults fall, with the critic's vote (0.3-0.7)
# and with p(predicted|x) alone (0.9-0.99)
THRESHOLDS = (0.0, 0.1, 0.2, *(round(0.3 + 0.05 * i, 2) for i in range(12)))
THRESHOLDS += (0.9, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 0.999)


def reasons(
    probs: np.ndarray, critic_probs: np.ndarray | None, flagged: np.ndarray, min_probability: float
) -> np.ndarray:
    """[N, len(REASONS)] booleans: which reasons hold for each answer, from p(y|x) [N, C], the
    critic's digit probabilities [N, C] (or None), the out-of-distribution flags [N]."""
    predicted = probs.argmax(axis=1)
    low = probs.max(axis=1) < min_probability
    if critic_probs is None:
        disagrees = np.zeros(len(probs), dtype=bool)
    else:
        disagrees = critic_probs[np.arange(len(probs)), predicted] < min_probability
    return np.stack([np.asarray(flagged, dtype=bool), low, disagrees], axis=1)


def largest_within(curve: list[dict], budget: float) -> float:
    """The largest min_probability of a curve() that abstains on at most `budget` (0.0 when none does)."""
    return max((row["min_probability"] for row in curve if row["abstained"] <= budget), default=0.0)


def names(row: np.ndarray) -> list[str]:
    """The reasons that hold in one row of reasons()."""
    return [name for name, holds in zip(REASONS, row) if holds]


def curve(
    probs: np.ndarray,
    critic_probs: np.ndarray | None,
    labels: np.ndarray,
    flagged: np.ndarray,
    thresholds: tuple[float, ...],
) -> list[dict]:
    """Per min_probability: the share abstained (for any reason) and the accuracy of the rest."""
    correct = probs.argmax(axis=1) == labels
    rows = []
    for threshold in thresholds:
        abstain = reasons(probs, critic_probs, flagged, threshold).any(axis=1)
        kept = ~abstain
        rows.append(
            {
                "min_probability": threshold,
                "abstained": float(abstain.mean()),
                "accuracy_kept": float(correct[kept].mean()) if kept.any() else None,
            }
        )
    return rows
