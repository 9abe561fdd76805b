"""How calibration chooses the abstention rule's threshold: per min_probability, the share of validation
answers abstained and the accuracy of the rest (service.engine.scoring.abstention_reasons decides each answer),
and the largest threshold within a budget of abstentions. The model card and bench.ood report the curve."""

from __future__ import annotations

import numpy as np

from service.engine.scoring import abstention_reasons

RULE = (
    "abstain when flagged, when p(predicted|x) < min_probability, or when the critic's probability of the "
    "predicted class < min_probability"
)
# the min_probability curves report: finer where the defaults fall, with the critic's vote (0.3-0.7)
# and with p(predicted|x) alone (0.9-0.99)
THRESHOLDS = (0.0, 0.1, 0.2, *(round(0.3 + 0.05 * i, 2) for i in range(12)))
THRESHOLDS += (0.9, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 0.999)


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
        abstain = abstention_reasons(probs, critic_probs, flagged, threshold).any(axis=1)
        kept = ~abstain
        rows.append(
            {
                "min_probability": threshold,
                "abstained": float(abstain.mean()),
                "accuracy_kept": float(correct[kept].mean()) if kept.any() else None,
            }
        )
    return rows


def largest_within(curve: list[dict], budget: float) -> float:
    """The largest min_probability of a curve() that abstains on at most `budget` (0.0 when none does)."""
    return max((row["min_probability"] for row in curve if row["abstained"] <= budget), default=0.0)
