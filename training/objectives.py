"""Log-densities, the ELBO and the importance-weighted bound.

Log-weights (shape [K, N]) are computed apart from their reduction:
log w_k = log p(x|z_k,y) + log p(z_k) - log q(z_k|x,y), z_k ~ q(z|x,y).
With K = 1 the bound is the single-sample ELBO; as K grows it tightens
towards log p(x|y) (Burda et al., 2016, "Importance Weighted Autoencoders").
"""

from __future__ import annotations

import math

import torch
from torch.func import functional_call

from training.configs import ModelConfig
from training.model import CVAE, reparameterize

LOG_2PI = math.log(2 * math.pi)


def log_mean_exp(values: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log(mean(exp(values))) along `dim`, stable for any magnitude."""
    peak = values.amax(dim=dim, keepdim=True)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    summed = torch.exp(values - peak).sum(dim=dim, keepdim=True).log() + peak
    return summed.squeeze(dim) - math.log(values.shape[dim])


def softplus(logits: torch.Tensor) -> torch.Tensor:
    """log(1 + exp(l)), written so that it stays finite for any l, here and once exported to ONNX."""
    return torch.clamp(logits, min=0) + torch.log(1 + torch.exp(-torch.abs(logits)))


def bernoulli_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum over pixels of log Bernoulli(x | sigmoid(logits)) = x l - softplus(l) = -BCE."""
    return (x * logits - softplus(logits)).sum(-1)


def gaussian_log_prob(logits: torch.Tensor, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """sum over pixels of log N(x | sigmoid(logits), sigma^2)."""
    mean = torch.sigmoid(logits)
    per_pixel = -0.5 * ((x - mean) / sigma) ** 2 - math.log(sigma) - 0.5 * LOG_2PI
    return per_pixel.sum(-1)


LEVELS = 256  # grey levels of an 8-bit pixel: x in {0, 1/255, ..., 1}
MIN_LOG_SCALE = -7.0  # the logistic's scale is at least e^-7, a 50th of a level (as in PixelCNN++)


def discretized_logistic_log_prob(logits: torch.Tensor, log_scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum over pixels of log P(x), each pixel's level x in {0, 1/255, ..., 1} given the probability mass a
    logistic of mean sigmoid(logits) and scale exp(log_scale) puts on its bin, [x - 1/510, x + 1/510]; the
    first and last bins reach to -inf and +inf, so that the 256 levels' probabilities sum to 1 (Salimans et
    al., 2017, "PixelCNN++", with one component). In nats of the image as stored: / (pixels x ln 2) gives
    bits per dimension."""
    half = 0.5 / (LEVELS - 1)
    mean = torch.sigmoid(logits)
    log_scale = torch.clamp(log_scale, min=MIN_LOG_SCALE)
    inverse_scale = torch.exp(-log_scale)
    upper = inverse_scale * (x - mean + half)
    lower = inverse_scale * (x - mean - half)
    log_below_upper = upper - softplus(upper)  # log sigmoid(upper): the first bin's mass
    log_above_lower = -softplus(lower)  # log (1 - sigmoid(lower)): the last bin's
    mass = torch.sigmoid(upper) - torch.sigmoid(lower)
    centre = inverse_scale * (x - mean)  # where the mass is too small to subtract: density x bin width
    log_density = centre - log_scale - 2 * softplus(centre) + math.log(2 * half)
    log_mass = torch.where(mass > 1e-5, torch.log(torch.clamp(mass, min=1e-12)), log_density)
    inner = torch.where(x > 1 - half, log_above_lower, log_mass)
    return torch.where(x < half, log_below_upper, inner).sum(-1)


def split_output(output: torch.Tensor, config: ModelConfig) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The decoder's output [..., x_dim] (or [..., 2 x_dim] for the logistic likelihood) as the logits of each
    pixel's mean and, for the logistic, each pixel's log-scale."""
    if config.likelihood != "logistic":
        return output, None
    return output[..., : config.x_dim], output[..., config.x_dim :]


def pixel_mean(output: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """E[x|z,y] in [0, 1] from the decoder's output: sigmoid of the mean's logits (for the logistic, up to the
    clipping of its tails at 0 and 1)."""
    return torch.sigmoid(split_output(output, config)[0])


def log_px_z(output: torch.Tensor, x: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """log p(x|z,y) under the model's pixel likelihood, summed over pixels: Bernoulli of binary pixels, a
    discretized logistic of the 256 grey levels, or a Gaussian of fixed variance."""
    if config.likelihood == "bernoulli":
        return bernoulli_log_prob(output, x)
    if config.likelihood == "logistic":
        return discretized_logistic_log_prob(*split_output(output, config), x)
    return gaussian_log_prob(output, x, config.gaussian_sigma)


def log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    """log N(z | 0, I), summed over the last axis."""
    return (-0.5 * z**2 - 0.5 * LOG_2PI).sum(-1)


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z | mu, diag exp(logvar)), summed over the last axis."""
    return (-0.5 * ((z - mu) ** 2 * torch.exp(-logvar) + logvar + LOG_2PI)).sum(-1)


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) in closed form (Kingma & Welling, App. B)."""
    return 0.5 * (mu**2 + torch.exp(logvar) - 1.0 - logvar).sum(-1)


def sample_q(
    model: CVAE,
    x: torch.Tensor,
    y: torch.Tensor,
    k: int,
    generator: torch.Generator | None = None,
    eps: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """z [k, N, D] ~ q(z|x,y) and log q(z|x,y) [k, N], plus q's (mu, logvar, context).

    z = mu + sigma * f(eps) with eps ~ N(0, I) drawn from `generator` or given [k, N, D], and
    log q(z) = log N(eps) - log |det df/deps| - sum log sigma (change of variables)."""
    mu, logvar, context = model.encode_with_context(x, y)  # [N, D], [N, D], [N, H]
    if eps is None:
        eps = torch.randn((k, *mu.shape), generator=generator, dtype=mu.dtype, device=mu.device)
    e, log_det = (eps, 0.0) if model.flow is None else model.flow(eps, context)
    z = reparameterize(mu, logvar, k, eps=e)
    return z, log_standard_normal(eps) - log_det - 0.5 * logvar.sum(-1), (mu, logvar, context)


def log_q_at(model: CVAE, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, context: torch.Tensor, flow=None):
    """log q(z|x,y) [K, N] at given z [K, N, D], through the inverse flow (`flow` may be a
    stand-in for model.flow, e.g. the same flow with its parameters detached)."""
    flow = model.flow if flow is None else flow
    e = (z - mu) * torch.exp(-0.5 * logvar)
    eps, log_det = (e, 0.0) if flow is None else flow(e, context, inverse=True)
    return log_standard_normal(eps) - log_det - 0.5 * logvar.sum(-1)


def log_weights(
    model: CVAE,
    x: torch.Tensor,
    y: torch.Tensor,
    k: int,
    generator: torch.Generator | None = None,
    eps: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Importance log-weights [k, N] and log p(x|z_k,y) [k, N] for x [N, 784], y one-hot [N, C].

    The noise is drawn from `generator`, or given as `eps` [k, N, D]."""
    z, log_q, _ = sample_q(model, x, y, k, generator, eps)  # [k, N, D], [k, N]
    logits = model.decode(z, y.expand(k, *y.shape))  # [k, N, 784]
    lpx_z = log_px_z(logits, x, model.config)  # [k, N]
    return lpx_z + log_standard_normal(z) - log_q, lpx_z


def iwae_bound(log_w: torch.Tensor) -> torch.Tensor:
    """log (1/K) sum_k w_k from log-weights [K, N] -> [N]."""
    return log_mean_exp(log_w, dim=0)


def class_log_joint(log_px_y: torch.Tensor, log_prior: torch.Tensor) -> torch.Tensor:
    """log p(x, y) = log p(x|y) + log p(y): [N, C] + [C] -> [N, C]."""
    return log_px_y + log_prior


def bayes_posterior(log_joint: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bayes' rule over classes: log p(x) [N] and log p(y|x) [N, C] from log p(x, y) [N, C]."""
    log_px = torch.logsumexp(log_joint, dim=-1)
    return log_px, log_joint - log_px[:, None]


def dreg_loss(
    model: CVAE, x: torch.Tensor, y: torch.Tensor, k: int, elbo_weight: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A surrogate whose gradient is DReG for q's parameters and, for p's, the mix
    sum_i (a/k + (1 - a) w~_i) d log p(x, z_i|y)/dtheta of the ELBO's and IWAE's gradients.

    log w_i uses log q(z_i) with q's parameters held fixed, so q is reached only
    through z_i; the gradient reaching z_i is rescaled so that q's gradient is
    sum_i w~_i^2 d log w_i/dz_i dz_i/dphi. Returns the loss and the k-sample bound [N]."""
    z, _, (mu, logvar, context) = sample_q(model, x, y, k)  # [k, N, D]
    fixed = None
    if model.flow is not None:
        params = {name: p.detach() for name, p in model.flow.named_parameters()}
        buffers = dict(model.flow.named_buffers())

        def fixed(e, c, inverse=False):
            return functional_call(model.flow, {**params, **buffers}, (e, c), {"inverse": inverse})

    log_q = log_q_at(model, z, mu.detach(), logvar.detach(), context.detach(), flow=fixed)
    logits = model.decode(z, y.expand(k, *y.shape))
    log_w = log_px_z(logits, x, model.config) + log_standard_normal(z) - log_q  # [k, N]
    weights = torch.softmax(log_w.detach(), dim=0)  # [k, N]
    mix = elbo_weight / k + (1 - elbo_weight) * weights  # > 0 for any elbo_weight > 0 or finite weights
    if z.requires_grad:
        scale = weights**2 / mix.clamp_min(torch.finfo(mix.dtype).tiny)
        z.register_hook(lambda grad: grad * scale[..., None])
    return -(mix * log_w).sum(0).mean(), iwae_bound(log_w.detach())
