"""Which reasons make /v1/classify abstain: flags, low probability, and the critic's disagreement."""

import numpy as np
import pytest

from service.engine import scoring
from training.abstention_curve import curve

PROBS = np.array([[0.99, 0.01], [0.6, 0.4], [0.2, 0.8], [0.55, 0.45]])
CRITIC = np.array([[0.98, 0.02], [0.1, 0.9], [0.3, 0.7], [0.97, 0.03]])  # disagrees on the second image
LABELS = np.array([0, 1, 1, 0])
FLAGGED = np.array([False, False, True, False])


def names(row: np.ndarray) -> list[str]:
    """The reasons that hold in one row of scoring.abstention_reasons()."""
    return [name for name, holds in zip(scoring.REASONS, row) if holds]


def test_each_reason_holds_on_its_own_evidence():
    holds = scoring.abstention_reasons(PROBS, CRITIC, FLAGGED, 0.5)
    assert [names(row) for row in holds] == [[], ["critic_disagrees"], ["out_of_distribution"], []]
    holds = scoring.abstention_reasons(PROBS, CRITIC, FLAGGED, 0.75)
    assert names(holds[1]) == ["low_probability", "critic_disagrees"]
    assert names(holds[2]) == ["out_of_distribution", "critic_disagrees"]  # 0.7 for class 1
    assert names(holds[3]) == ["low_probability"]


def test_without_the_critics_digits_only_flags_and_low_probability_count():
    holds = scoring.abstention_reasons(PROBS, None, FLAGGED, 0.5)
    assert not holds[:, scoring.REASONS.index("critic_disagrees")].any()
    assert [names(row) for row in holds] == [[], [], ["out_of_distribution"], []]


def test_the_curve_counts_every_reason():
    by_threshold = {row["min_probability"]: row for row in curve(PROBS, None, LABELS, FLAGGED, (0.0, 0.7))}
    assert by_threshold[0.0]["abstained"] == 0.25 and by_threshold[0.0]["accuracy_kept"] == pytest.approx(2 / 3)
    assert by_threshold[0.7]["abstained"] == 0.75 and by_threshold[0.7]["accuracy_kept"] == 1.0
    with_critic = curve(PROBS, CRITIC, LABELS, FLAGGED, (0.5, 1.0))
    assert with_critic[0] == {"min_probability": 0.5, "abstained": 0.5, "accuracy_kept": 1.0}
    assert with_critic[1] == {"min_probability": 1.0, "abstained": 1.0, "accuracy_kept": None}
