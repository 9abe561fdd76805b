"""The service's estimator of log p(x|y), log p(x) and p(y|x), and its sampler.

The same math as training.objectives, in NumPy over the ONNX graphs: the
scorer graph returns log-weights log w_k = log p(x|z_k,y) + log p(z_k) -
log q(z_k|x,y) of shape [K, rows]; here they are reduced with a stable
log-mean-exp, given a standard error and a reliability diagnostic, and
combined over classes by Bayes' rule. A parity test pins the two
implementations together. service.engine.adaptive decides how many samples each
image and class gets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.engine import pareto


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
    khat = pareto.khat(log_w)
    reliable = alive & (khat <= pareto.threshold(k))  # NaN (too few samples to judge) is not reliable
    return log_mean_exp(log_w, axis=0), std_error, ess, khat, reliable


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


def images_from_logits(logits: np.ndarray, likelihood: str, rng: np.random.Generator):
    """Means of p(x|z,y) [N, 784] and, for a Bernoulli model, one binary draw x ~ p(x|z,y)."""
    mean = sigmoid(logits.astype(np.float64))
    if likelihood != "bernoulli":
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
