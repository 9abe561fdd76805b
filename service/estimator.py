"""The service's estimator of log p(x|y), log p(x) and p(y|x), and its sampler.

The same math as training.objectives, in NumPy over the ONNX graphs: the
scorer graph returns log-weights log w_k = log p(x|z_k,y) + log p(z_k) -
log q(z_k|x,y) of shape [K, rows]; here they are reduced with a stable
log-mean-exp and combined over classes by Bayes' rule. A parity test pins
the two implementations together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from service.runtime import Model


def log_mean_exp(values: np.ndarray, axis: int = 0) -> np.ndarray:
    peak = np.max(values, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    out = np.log(np.mean(np.exp(values - peak), axis=axis, keepdims=True)) + peak
    return np.squeeze(out, axis=axis)


def logsumexp(values: np.ndarray, axis: int = -1) -> np.ndarray:
    peak = np.max(values, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    return np.squeeze(np.log(np.sum(np.exp(values - peak), axis=axis, keepdims=True)) + peak, axis=axis)


@dataclass
class ClassEstimates:
    """Per image and class, all [N, C]: the estimate of log p(x|y), its standard error
    (delta method), the effective sample size of the weights, the Monte-Carlo
    reconstruction term E_q[log p(x|z,y)], KL(q(z|x,y)||p(z)), and the samples used."""

    log_px_y: np.ndarray
    std_error: np.ndarray
    ess: np.ndarray
    reconstruction: np.ndarray
    kl: np.ndarray
    num_samples: np.ndarray


@dataclass
class Posterior:
    """Bayes' rule over classes, all per image: log p(x) [N], its standard error [N],
    log p(y|x) [N, C], and the ELBO of log p(x) with q(y|x) = p(y|x) and its parts [N]."""

    log_px: np.ndarray
    log_px_std_error: np.ndarray
    log_py_x: np.ndarray
    elbo: np.ndarray
    reconstruction: np.ndarray
    kl_z: np.ndarray
    kl_y: np.ndarray


@dataclass(frozen=True)
class Screening:
    """Adaptive sampling: every class first gets `samples` draws; only classes whose
    screened log p(x, y) lies within `margin` nats of the image's best get the rest."""

    samples: int = 64
    margin: float = 20.0


ScoreFn = Callable[[np.ndarray, np.ndarray, np.ndarray], Awaitable[tuple[np.ndarray, np.ndarray, np.ndarray]]]


def reduce_log_weights(log_w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log_w [K, R] -> log-mean-exp, delta-method standard error of it, and ESS, each [R]."""
    log_w = log_w.astype(np.float64)
    k = log_w.shape[0]
    peak = log_w.max(axis=0, keepdims=True)
    w = np.exp(log_w - np.where(np.isfinite(peak), peak, 0.0))  # scaled weights in (0, 1]
    mean = w.mean(axis=0)
    std_error = np.sqrt(np.maximum(w.var(axis=0, ddof=1), 0.0) / k) / mean  # needs K >= 2
    ess = w.sum(axis=0) ** 2 / (w**2).sum(axis=0)
    return log_mean_exp(log_w, axis=0), std_error, ess


def row_generators(seed: int, num_images: int, num_classes: int) -> list[np.random.Generator]:
    """One noise stream per (image, class), so a seed gives the same answer however the
    rows are chunked, batched with other requests, or screened."""
    return [np.random.default_rng([seed, i, c]) for i in range(num_images) for c in range(num_classes)]


def draw_noise(gens: list[np.random.Generator], k: int, latent_dim: int) -> np.ndarray:
    """The next k draws of each stream: [k, rows, D]."""
    return np.stack([g.standard_normal((k, latent_dim), dtype=np.float32) for g in gens], axis=1)


async def _draw_and_score(
    score: ScoreFn, rows_x: np.ndarray, rows_y: np.ndarray, gens: list, k: int, latent_dim: int, chunk_rows: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The next k draws of every row's stream, scored: log_w, log_px_z [k, R] and KL [R]."""
    total = len(rows_x)
    rows_per_call = max(1, chunk_rows // k)
    k_per_call = min(k, chunk_rows)
    log_w = np.empty((k, total), dtype=np.float32)
    lpx_z = np.empty((k, total), dtype=np.float32)
    kl = np.empty(total, dtype=np.float32)
    for r0 in range(0, total, rows_per_call):
        r1 = min(total, r0 + rows_per_call)
        for k0 in range(0, k, k_per_call):
            k1 = min(k, k0 + k_per_call)
            eps = await asyncio.to_thread(draw_noise, gens[r0:r1], k1 - k0, latent_dim)  # [k, rows, D], off the loop
            log_w[k0:k1, r0:r1], lpx_z[k0:k1, r0:r1], kl[r0:r1] = await score(rows_x[r0:r1], rows_y[r0:r1], eps)
    return log_w, lpx_z, kl


async def estimate_classes(
    score: ScoreFn,
    x: np.ndarray,
    num_classes: int,
    latent_dim: int,
    num_samples: int,
    seed: int,
    chunk_rows: int,
    log_prior: np.ndarray | None = None,
    screening: Screening | None = None,
) -> ClassEstimates:
    """Importance-sampling estimates of log p(x|y) for every image x [N, 784] and class.

    With `screening` (and `log_prior`), classes that cannot matter keep their
    screening estimate; the others get all `num_samples`, drawn from the same
    streams, so their estimates equal the exhaustive ones exactly.
    """
    n, c = len(x), num_classes
    rows_x = np.repeat(x, c, axis=0)  # [N*C, 784]: row i*C + j is image i with class j
    rows_y = np.tile(np.arange(c), n)  # [N*C]
    gens = await asyncio.to_thread(row_generators, seed, n, c)
    adaptive = screening is not None and num_samples > screening.samples
    first = screening.samples if adaptive else num_samples
    log_w, lpx_z, kl = await _draw_and_score(score, rows_x, rows_y, gens, first, latent_dim, chunk_rows)
    parts = [(log_w[:, r], lpx_z[:, r]) for r in range(n * c)]
    if adaptive:
        screened = log_mean_exp(log_w.astype(np.float64), axis=0).reshape(n, c) + log_prior
        keep = np.nonzero((screened >= screened.max(axis=1, keepdims=True) - screening.margin).ravel())[0]
        more_w, more_lpx, _ = await _draw_and_score(
            score, rows_x[keep], rows_y[keep], [gens[r] for r in keep], num_samples - first, latent_dim, chunk_rows
        )
        for j, r in enumerate(keep):
            parts[r] = (np.concatenate([log_w[:, r], more_w[:, j]]), np.concatenate([lpx_z[:, r], more_lpx[:, j]]))
    return await asyncio.to_thread(_reduce, parts, kl, n, c)


def _reduce(parts: list, kl: np.ndarray, n: int, c: int) -> ClassEstimates:
    """Per-row log-weights and log p(x|z,y) of any length -> the [N, C] estimates."""
    out = {key: np.empty(n * c) for key in ("log_px_y", "std_error", "ess", "reconstruction")}
    used = np.array([len(w) for w, _ in parts], dtype=np.int64)
    for length in np.unique(used):
        rows = np.nonzero(used == length)[0]
        w = np.stack([parts[r][0] for r in rows], axis=1)  # [length, rows]
        out["log_px_y"][rows], out["std_error"][rows], out["ess"][rows] = reduce_log_weights(w)
        out["reconstruction"][rows] = np.stack([parts[r][1] for r in rows], axis=1).astype(np.float64).mean(0)
    shaped = {key: value.reshape(n, c) for key, value in out.items()}
    shaped["num_samples"] = used.reshape(n, c)
    return ClassEstimates(kl=kl.astype(np.float64).reshape(n, c), **shaped)


def bayes_rule(estimates: ClassEstimates, log_prior: np.ndarray) -> Posterior:
    """Combine per-class estimates: p(y|x) = p(x|y) p(y) / p(x), p(x) = sum_y p(x|y) p(y)."""
    log_joint = estimates.log_px_y + log_prior  # [N, C]
    log_px = logsumexp(log_joint, axis=-1)
    log_py_x = log_joint - log_px[:, None]
    q = np.exp(log_py_x)
    # var of p̂(x) = sum_y p(y)^2 var p̂(x|y); relative to p̂(x) it is sum_y p(y|x)^2 se_y^2
    log_px_std_error = np.sqrt((q**2 * estimates.std_error**2).sum(-1))
    reconstruction = (q * estimates.reconstruction).sum(-1)
    kl_z = (q * estimates.kl).sum(-1)
    kl_y = np.where(q > 0, q * (log_py_x - log_prior), 0.0).sum(-1)  # 0 log 0 = 0
    return Posterior(log_px, log_px_std_error, log_py_x, reconstruction - kl_z - kl_y, reconstruction, kl_z, kl_y)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * logits))


def images_from_logits(logits: np.ndarray, likelihood: str, rng: np.random.Generator):
    """Means of p(x|z,y) [N, 784] and, for a Bernoulli model, one binary draw x ~ p(x|z,y)."""
    mean = sigmoid(logits.astype(np.float64))
    if likelihood != "bernoulli":
        return mean, None
    return mean, (rng.random(mean.shape) < mean).astype(np.uint8)


def draw_classes(model: Model, n: int, rng: np.random.Generator) -> np.ndarray:
    """y ~ p(y), the class prior of the manifest."""
    return rng.choice(model.num_classes, size=n, p=np.exp(model.log_prior))


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
