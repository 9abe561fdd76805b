"""When /v1/classify abstains: the answer's class should not be relied on.

p(y|x) is Bayes' rule over the generative model's per-class likelihoods, and stays the answer.
Whether to rely on its top class is decided from three pieces of evidence, each a reason:

    out_of_distribution   the image was flagged as unlike the training digits (service.engine.ood)
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
