"""The service's estimator of log p(x|y), log p(x) and p(y|x), and its sampler.

The same math as training.objectives, in NumPy over the ONNX graphs: the
scorer graph returns log-weights log w_k = log p(x|z_k,y) + log p(z_k) -
log q(z_k|x,y) of shape [K, rows]; here they are reduced with a stable
log-mean-exp, given a standard error and a reliability diagnostic, and
combined over classes by Bayes' rule. A parity test pins the two
implementations together. service.engine.adaptive decides how many samples each
image and class gets.

The reliability diagnostic is the Pareto k-hat of importance weights (Vehtari, Simpson, Gelman, Yao
and Gabry, 2024, "Pareto Smoothed Importance Sampling", JMLR 25). A generalized Pareto distribution
is fitted to the largest weights of each row; its shape k says how heavy the tail is. The variance
of the weights is finite only for k < 1/2, and the estimate of their mean is trustworthy below
min(1 - 1/log10(K), 0.7): above it, a few weights dominate, the estimate is likely too low, and its
standard error cannot be trusted. The fit is ArviZ's (arviz-stats, `_gpdfit`: the empirical-Bayes
estimator of Zhang and Stephens, 2009, with a weak prior on k centred at 1/2) written over many rows
at once, so that every class of every image is judged in one NumPy pass without SciPy; the tests
check it against arviz-stats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def log_mean_exp(values: np.ndarray, axis: int = 0) -> np.ndarray:
    peak = np.max(values, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    with np.errstate(divide="ignore"):  # all -inf gives -inf
        out = np.log(np.mean(np.exp(values - peak), axis=axis, keepdims=True)) + peak
    return np.squeeze(out, axis=axis)


def logsumexp(values: np.ndarray, axis: int = -1) -> np.ndarray:
    peak = np.max(values, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    return np.squeeze(np.log(np.sum(np.exp(values - peak), axis=axis, keepdims=True)) + peak, axis=axis)


@dataclass
class ClassEstimates:
    """Per image and class, all [N, C]: the estimate of log p(x|y), its standard error
    (delta method), the effective sample size of the weights, their Pareto k-hat and whether
    it allows trusting the estimate, the Monte Carlo reconstruction term E_q[log p(x|z,y)]
    and KL(q(z|x,y)||p(z)) = E_q[log q - log p(z)], and the samples used."""

    log_px_y: np.ndarray
    std_error: np.ndarray
    ess: np.ndarray
    pareto_k: np.ndarray
    reliable: np.ndarray
    reconstruction: np.ndarray
    kl: np.ndarray
    num_samples: np.ndarray


@dataclass
class BayesRule:
    """Bayes' rule over classes, all per image: log p(x) [N], its standard error [N],
    log p(y|x) [N, C], whether every class that carries p(y|x) >= RELEVANT has reliable
    weights [N], and the ELBO of log p(x) with q(y|x) = p(y|x) and its parts [N]."""

    log_px: np.ndarray
    log_px_std_error: np.ndarray
    log_py_x: np.ndarray
    reliable: np.ndarray
    elbo: np.ndarray
    reconstruction: np.ndarray
    kl_z: np.ndarray
    kl_y: np.ndarray


RELEVANT = 1e-3  # p(y|x) from which a class's estimate counts towards log p(x)'s reliability


def reduce_log_weights(log_w: np.ndarray) -> tuple[np.ndarray, ...]:
    """log_w [K, R] -> per row [R]: log-mean-exp, the delta-method standard error of it, the
    effective sample size, the Pareto k-hat and whether k-hat allows trusting the estimate.

    The standard error is inf with a single sample, and for rows whose weights are all zero
    (log-weights all -inf), where the estimate is -inf and the ESS 0."""
    log_w = log_w.astype(np.float64)
    k = log_w.shape[0]
    peak = log_w.max(axis=0, keepdims=True)
    w = np.exp(log_w - np.where(np.isfinite(peak), peak, 0.0))  # scaled weights in (0, 1]
    total = w.sum(axis=0)
    alive = total > 0
    safe_total = np.where(alive, total, 1.0)
    spread = np.sqrt(np.maximum(w.var(axis=0, ddof=1), 0.0) / k) if k > 1 else np.full(w.shape[1], np.inf)
    std_error = np.where(alive, spread * k / safe_total, np.inf)
    ess = np.where(alive, total**2 / np.where(alive, (w**2).sum(axis=0), 1.0), 0.0)
    k_hat = khat(log_w)
    reliable = alive & (k_hat <= khat_threshold(k))  # NaN (too few samples to judge) is not reliable
    return log_mean_exp(log_w, axis=0), std_error, ess, k_hat, reliable


BINARIZATION, NOISE = 0, 1  # spawn keys under the request's seed


def binarization_stream(seed: int) -> np.random.Generator:
    """The stream of binarize='bernoulli', apart from every noise stream of the same seed."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(BINARIZATION,)))


def noise_streams(seed: int, num_images: int, num_classes: int) -> list[np.random.Generator]:
    """One noise stream per (image, class), so a seed gives the same answer however the rows
    are chunked, batched with other requests, screened or refined in rounds. Every stream
    comes from one SeedSequence with its own spawn key, so no two (seed, image, class)
    share a state, whatever the size of the seed."""
    return [
        np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(NOISE, i, c)))
        for i in range(num_images)
        for c in range(num_classes)
    ]


def draw_noise(gens: list[np.random.Generator], k: int, latent_dim: int) -> np.ndarray:
    """The next k draws of each stream: [k, rows, D]."""
    return np.stack([g.standard_normal((k, latent_dim), dtype=np.float32) for g in gens], axis=1)


def bayes_rule(estimates: ClassEstimates, log_prior: np.ndarray) -> BayesRule:
    """Combine per-class estimates: p(y|x) = p(x|y) p(y) / p(x), p(x) = sum_y p(x|y) p(y)."""
    log_joint = estimates.log_px_y + log_prior  # [N, C]
    log_px = logsumexp(log_joint, axis=-1)
    log_py_x = log_joint - log_px[:, None]
    q = np.exp(log_py_x)
    # var of p̂(x) = sum_y p(y)^2 var p̂(x|y); relative to p̂(x) it is sum_y p(y|x)^2 se_y^2
    # a class below RELEVANT whose error cannot be estimated (one screening sample) adds nothing
    counted = (q > 0) & ((q >= RELEVANT) | np.isfinite(estimates.std_error))
    log_px_std_error = np.sqrt(np.where(counted, q**2 * estimates.std_error**2, 0.0).sum(-1))
    reliable = (estimates.reliable | (q < RELEVANT)).all(-1)
    reconstruction = (q * estimates.reconstruction).sum(-1)
    kl_z = (q * estimates.kl).sum(-1)
    kl_y = np.where(q > 0, q * (log_py_x - log_prior), 0.0).sum(-1)  # 0 log 0 = 0
    return BayesRule(
        log_px, log_px_std_error, log_py_x, reliable, reconstruction - kl_z - kl_y, reconstruction, kl_z, kl_y
    )


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * logits))


def images_from_logits(output: np.ndarray, likelihood: dict, rng: np.random.Generator):
    """The decoder's output -> means of p(x|z,y) [N, D] and one draw x ~ p(x|z,y) [N, D]: binary for a
    Bernoulli model; for a discretized logistic, its levels 0-255 (the location sigmoid(logits) as the mean,
    the first and last levels taking the tails); none for a Gaussian. `likelihood`: the manifest's."""
    kind = likelihood["type"]
    if kind == "logistic":
        half = output.shape[1] // 2
        mean = sigmoid(output[:, :half].astype(np.float64))
        log_scale = np.maximum(output[:, half:].astype(np.float64), likelihood["parameters"]["min_log_scale"])
        u = np.clip(rng.random(mean.shape), 1e-12, 1 - 1e-12)
        draw = mean + np.exp(log_scale) * (np.log(u) - np.log1p(-u))  # the logistic's inverse CDF
        return mean, np.clip(np.round(draw * 255.0), 0, 255).astype(np.uint8)
    mean = sigmoid(output.astype(np.float64))
    if kind != "bernoulli":
        return mean, None
    return mean, (rng.random(mean.shape) < mean).astype(np.uint8)


def draw_classes(log_prior: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """y ~ p(y), the class prior of the manifest [C]."""
    return rng.choice(len(log_prior), size=n, p=np.exp(log_prior))


def interpolate(z_from: np.ndarray, z_to: np.ndarray, steps: int, spherical: bool) -> np.ndarray:
    """Points from z_from to z_to inclusive [steps, D]; spherical keeps the norm typical of N(0, I)."""
    t = np.linspace(0.0, 1.0, steps)[:, None]
    if not spherical:
        return (1 - t) * z_from + t * z_to
    cos = np.dot(z_from, z_to) / max(np.linalg.norm(z_from) * np.linalg.norm(z_to), 1e-12)
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    if omega < 1e-6:
        return (1 - t) * z_from + t * z_to
    return (np.sin((1 - t) * omega) * z_from + np.sin(t * omega) * z_to) / np.sin(omega)


MIN_TAIL = 5


def tail_length(k: int) -> int:
    """Weights in the fitted tail for K draws: 3 sqrt(K) above 225 draws, else K / 5."""
    return int(np.floor(3 * np.sqrt(k))) if k > 225 else k // 5


def khat_threshold(k: int) -> float:
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
