"""The Pareto k-hat diagnostic of importance weights (Vehtari, Simpson, Gelman, Yao and Gabry,
2024, "Pareto Smoothed Importance Sampling", JMLR 25).

A generalized Pareto distribution is fitted to the largest weights of each row; its shape k
says how heavy the tail is. The variance of the weights is finite only for k < 1/2, and the
estimate of their mean is trustworthy below min(1 - 1/log10(K), 0.7): above it, a few weights
dominate, the estimate is likely too low, and its standard error cannot be trusted.

This is the fit of ArviZ (arviz-stats, `_gpdfit`: the empirical-Bayes estimator of Zhang and
Stephens, 2009, with a weak prior on k centred at 1/2) written over many rows at once, so that
the service can judge every class of every image in one NumPy pass without SciPy; the tests
check it against arviz-stats.
"""

from __future__ import annotations

import numpy as np

MIN_TAIL = 5


def tail_length(k: int) -> int:
    """Weights in the fitted tail for K draws: 3 sqrt(K) above 225 draws, else K / 5."""
    return int(np.floor(3 * np.sqrt(k))) if k > 225 else k // 5


def threshold(k: int) -> float:
    """The largest k-hat at which K draws still give a reliable estimate."""
    return min(1.0 - 1.0 / np.log10(k), 0.7) if k > 10 else 0.0


def khat(log_w: np.ndarray) -> np.ndarray:
    """log_w [K, R] -> k-hat [R]. NaN where K is too small to fit a tail (K < 25) or a row's
    weights are not all finite; -inf where the tail is flat (all its weights equal)."""
    log_w = np.asarray(log_w, dtype=np.float64)
    k, rows = log_w.shape
    m = tail_length(k)
    out = np.full(rows, np.nan)
    finite = np.isfinite(log_w).all(axis=0)
    if m < MIN_TAIL or not finite.any():
        return out
    ordered = np.sort(log_w[:, finite], axis=0)  # [K, R'] ascending
    weights = np.exp(ordered - ordered[-1])
    tail = weights[k - m :] - weights[k - m - 1]  # [M, R'] exceedances over the cut-off, ascending
    flat = tail[-1] <= np.finfo(float).tiny
    fitted = np.full(tail.shape[1], -np.inf)
    if (~flat).any():
        fitted[~flat] = _gpd_shape(tail[:, ~flat])
    out[finite] = fitted
    return out


def _gpd_shape(x: np.ndarray) -> np.ndarray:
    """Empirical-Bayes shape estimate of a generalized Pareto fit to each column of x [M, R]
    (ascending, non-negative, largest value positive), with ArviZ's prior on k."""
    prior_scale, prior_strength = 3.0, 10.0
    m = x.shape[0]
    grid = 30 + int(m**0.5)
    quartile = np.maximum(x[int(m / 4 + 0.5) - 1], np.finfo(float).tiny)
    b = (1 - np.sqrt(grid / (np.arange(1, grid + 1) - 0.5)))[:, None] / (prior_scale * quartile) + 1 / x[-1]  # [G, R]
    k_grid = np.log1p(-b[:, None, :] * x[None]).mean(axis=1)  # [G, R]
    log_lik = m * (np.log(-b / k_grid) - k_grid - 1)
    weights = np.exp(log_lik - log_lik.max(axis=0))
    weights /= weights.sum(axis=0)
    weights = np.where(weights >= 10 * np.finfo(float).eps, weights, 0.0)
    weights /= weights.sum(axis=0)
    b_post = (b * weights).sum(axis=0)
    shape = np.log1p(-b_post * x).mean(axis=0)
    return (m * shape + prior_strength * 0.5) / (m + prior_strength)
