"""Annealed importance sampling (Neal, 2001), the gold standard that the service's estimates of
log p(x|y) are checked against (as in Wu et al., 2017, "On the Quantitative Analysis of
Decoder-Based Generative Models").

Each chain starts from f_0(z): a Gaussian (the encoder's q(z|x,y) without its flow, or the
prior) or q(z|x,y) with its coupling flow, and moves through the geometric path
f_t(z) = f_0(z)^(1 - beta_t) p(x, z|y)^beta_t with Hamiltonian Monte Carlo transitions, beta
rising from 0 to 1 on a sigmoid schedule. The log weight of a chain,
sum_t (beta_t - beta_(t-1)) [log p(x, z_(t-1)|y) - log f_0(z_(t-1))], is an unbiased estimate
(in the weight) of log p(x|y) whatever the number of temperatures; more temperatures shrink
its variance and the downward bias of its log.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from training.configs import AisConfig
from training.model import CVAE
from training.objectives import log_mean_exp, log_normal, log_px_z, log_q_at, log_standard_normal

LogDensity = Callable[[torch.Tensor], torch.Tensor]  # z [chains, rows, D] -> [chains, rows]


@dataclass
class AisResult:
    """Per row: the estimate of log p(x|y), its standard error over chains, and the mean
    acceptance rate of the HMC moves; log_w [chains, rows] holds every chain's weight."""

    log_px_y: torch.Tensor
    std_error: torch.Tensor
    acceptance: torch.Tensor
    log_w: torch.Tensor


class Start(NamedTuple):
    """The distribution f_0 chains start from: `sample(chains, generator)` -> z [chains, rows, D],
    its log-density, and `scale` [rows, D], the first HMC step's unit in each dimension."""

    sample: Callable[[int, torch.Generator], torch.Tensor]
    log_density: LogDensity
    scale: torch.Tensor


def gaussian_start(mu: torch.Tensor, logvar: torch.Tensor) -> Start:
    """f_0 = N(mu, diag exp(logvar)), mu and logvar [rows, D]."""
    std = torch.exp(0.5 * logvar)

    def sample(chains: int, generator: torch.Generator) -> torch.Tensor:
        return mu + std * torch.randn((chains, *mu.shape), generator=generator)

    return Start(sample, lambda z: log_normal(z, mu, logvar), std)


def proposal_start(model: CVAE, x: torch.Tensor, y: torch.Tensor) -> Start:
    """f_0 = the model's own q(z|x,y), its coupling flow included, for rows x [R, 784], y one-hot [R, C]."""
    with torch.no_grad():
        mu, logvar, context = model.encode_with_context(x, y)
    std = torch.exp(0.5 * logvar)

    def sample(chains: int, generator: torch.Generator) -> torch.Tensor:
        eps = torch.randn((chains, *mu.shape), generator=generator)
        with torch.no_grad():
            e = eps if model.flow is None else model.flow(eps, context)[0]
        return mu + std * e

    return Start(sample, lambda z: log_q_at(model, z, mu, logvar, context), std)


def sigmoid_schedule(num_temperatures: int, spread: float = 4.0) -> torch.Tensor:
    """beta_0 = 0 < ... < beta_T = 1, dense near both ends (Grosse et al., 2015)."""
    s = torch.sigmoid(torch.linspace(-spread, spread, num_temperatures + 1, dtype=torch.float64))
    return ((s - s[0]) / (s[-1] - s[0])).float()


def _value_and_grad(log_density: LogDensity, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        value = log_density(z)
        (grad,) = torch.autograd.grad(value.sum(), z)
    return value.detach(), grad


def anneal(log_joint: LogDensity, start: Start, config: AisConfig, generator: torch.Generator) -> AisResult:
    """AIS from `start`'s f_0 to p(x, z) given as `log_joint`."""
    chains, rows = config.num_chains, start.scale.shape[0]
    log_start = start.log_density
    z = start.sample(chains, generator)  # [chains, rows, D]
    betas = sigmoid_schedule(config.num_temperatures)
    step = config.initial_step_size * start.scale[None]  # per row and dimension
    log_w = torch.zeros(chains, rows)
    accepted = torch.zeros(rows)
    for t in range(1, len(betas)):
        beta_prev, beta = betas[t - 1].item(), betas[t].item()
        log_w += (beta - beta_prev) * (log_joint(z) - log_start(z)).detach()

        def log_target(v, beta=beta):
            return (1 - beta) * log_start(v) + beta * log_joint(v)

        z, rate = _hmc(log_target, z, step, config.leapfrog_steps, generator)
        accepted += rate.mean(0)
        # adapt the step of each row towards the target acceptance (the chain stays valid
        # for AIS: every transition leaves its own f_t invariant, whatever its step size)
        step = step * torch.where(rate.mean(0) > config.target_acceptance, 1.02, 0.98)[None, :, None]
    log_w = log_w.double()
    estimate = log_mean_exp(log_w, dim=0)
    w = torch.exp(log_w - log_w.amax(0, keepdim=True))
    std_error = torch.sqrt(w.var(0) / chains) / w.mean(0)
    return AisResult(estimate, std_error, accepted / (len(betas) - 1), log_w)


def _hmc(log_target: LogDensity, z: torch.Tensor, step: torch.Tensor, leapfrog_steps: int, generator):
    """One HMC transition per chain and row with a Metropolis correction; returns the new z
    and whether each proposal was accepted [chains, rows]."""
    momentum = torch.randn(z.shape, generator=generator)
    value, grad = _value_and_grad(log_target, z)
    start_energy = -value + 0.5 * (momentum**2).sum(-1)
    new_z, p = z, momentum + 0.5 * step * grad
    for i in range(leapfrog_steps):
        new_z = new_z + step * p
        new_value, grad = _value_and_grad(log_target, new_z)
        p = p + (step if i < leapfrog_steps - 1 else 0.5 * step) * grad
    energy = -new_value + 0.5 * (p**2).sum(-1)
    accept_prob = torch.exp(torch.clamp(start_energy - energy, max=0.0))
    accept_prob = torch.where(torch.isfinite(accept_prob), accept_prob, torch.zeros_like(accept_prob))
    accept = torch.rand(accept_prob.shape, generator=generator) < accept_prob
    return torch.where(accept[..., None], new_z, z), accept.float()


def cvae_log_joint(model: CVAE, x: torch.Tensor, y: torch.Tensor) -> LogDensity:
    """log p(x, z|y) = log p(x|z,y) + log p(z) for rows x [R, 784], y one-hot [R, C]."""

    def log_joint(z: torch.Tensor) -> torch.Tensor:
        logits = model.decode(z, y.expand(z.shape[0], *y.shape))
        return log_px_z(logits, x, model.config) + log_standard_normal(z)

    return log_joint


def cvae_log_px_y(model: CVAE, x: torch.Tensor, y: torch.Tensor, config: AisConfig, generator) -> AisResult:
    """AIS estimates of log p(x|y) for rows x [R, 784], y one-hot [R, C]."""
    for p in model.parameters():
        p.requires_grad_(False)
    if config.start == "proposal":
        return anneal(cvae_log_joint(model, x, y), proposal_start(model, x, y), config, generator)
    if config.start == "prior":
        mu, logvar = torch.zeros(len(x), model.config.latent_dim), torch.zeros(len(x), model.config.latent_dim)
    else:
        with torch.no_grad():
            mu, logvar = model.encode(x, y)
        logvar = logvar + 2 * math.log(1.5)  # a wider start covers the posterior's tails
    return anneal(cvae_log_joint(model, x, y), gaussian_start(mu, logvar), config, generator)
