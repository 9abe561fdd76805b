"""The service's estimator of log p(x|y), log p(x) and p(y|x), and its sampler.

The same math as training.objectives, in NumPy over the ONNX graphs: the
scorer graph returns log-weights log w_k = log p(x|z_k,y) + log p(z_k) -
log q(z_k|x,y) of shape [K, rows]; here they are reduced with a stable
log-mean-exp and combined over classes by Bayes' rule. A parity test pins
the two implementations together.
"""

from __future__ import annotations

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
    """Per image and class, all [N, C]: the K-sample estimate of log p(x|y), its
    standard error (delta method), the effective sample size of the weights,
    the Monte-Carlo reconstruction term E_q[log p(x|z,y)] and KL(q(z|x,y)||p(z))."""

    log_px_y: np.ndarray
    std_error: np.ndarray
    ess: np.ndarray
    reconstruction: np.ndarray
    kl: np.ndarray
    num_samples: int


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


def reduce_log_weights(log_w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log_w [K, R] -> log-mean-exp, delta-method standard error of it, and ESS, each [R]."""
    log_w = log_w.astype(np.float64)
    k = log_w.shape[0]
    w = np.exp(log_w - log_w.max(axis=0, keepdims=True))  # scaled weights in (0, 1]
    mean = w.mean(axis=0)
    std_error = np.sqrt(np.maximum(w.var(axis=0), 0.0) / k) / mean
    ess = w.sum(axis=0) ** 2 / (w**2).sum(axis=0)
    return log_mean_exp(log_w, axis=0), std_error, ess


def estimate_classes(
    model: Model, x: np.ndarray, classes: np.ndarray, num_samples: int, rng: np.random.Generator, chunk_rows: int
) -> ClassEstimates:
    """Importance-sampling estimates of log p(x|y) for every image x [N, 784] and class in `classes`.

    Noise is drawn row by row (image-major, then class, then sample), so a seed
    gives the same answer whatever the chunking.
    """
    n, c, d = len(x), len(classes), model.latent_dim
    rows_x = np.repeat(x, c, axis=0)  # [N*C, 784]: row i*C + j is image i with class classes[j]
    rows_y = np.tile(classes, n)  # [N*C]
    total = n * c
    out = {key: np.empty(total) for key in ("log_px_y", "std_error", "ess", "reconstruction", "kl")}
    rows_per_call = max(1, chunk_rows // num_samples)
    k_per_call = min(num_samples, chunk_rows)
    for r0 in range(0, total, rows_per_call):
        r1 = min(total, r0 + rows_per_call)
        log_w_parts, lpx_z_parts, kl = [], [], None
        for k0 in range(0, num_samples, k_per_call):
            k = min(k_per_call, num_samples - k0)
            eps = rng.standard_normal((r1 - r0, k, d), dtype=np.float32).transpose(1, 0, 2)  # [k, rows, D]
            log_w, lpx_z, kl = model.log_weights(rows_x[r0:r1], rows_y[r0:r1], np.ascontiguousarray(eps))
            log_w_parts.append(log_w)
            lpx_z_parts.append(lpx_z)
        log_w = np.concatenate(log_w_parts)  # [K, rows]
        out["log_px_y"][r0:r1], out["std_error"][r0:r1], out["ess"][r0:r1] = reduce_log_weights(log_w)
        out["reconstruction"][r0:r1] = np.concatenate(lpx_z_parts).astype(np.float64).mean(axis=0)
        out["kl"][r0:r1] = kl
    shaped = {key: value.reshape(n, c) for key, value in out.items()}
    return ClassEstimates(num_samples=num_samples, **shaped)


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


def sample_images(
    model: Model, y: np.ndarray, z: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    """Means of p(x|z,y) [N, 784] and, for a Bernoulli model, one binary draw x ~ p(x|z,y)."""
    mean = sigmoid(model.decode(z, y).astype(np.float64))
    if model.likelihood != "bernoulli":
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
