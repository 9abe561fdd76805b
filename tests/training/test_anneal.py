"""The AIS evaluator against a model whose log p(x) is known in closed form."""

import math

import pytest

torch = pytest.importorskip("torch")

from training.anneal import AisConfig, anneal, gaussian_start, sigmoid_schedule  # noqa: E402


def linear_gaussian(seed=0, rows=6, latent=3, pixels=12, sigma=0.7):
    """p(z) = N(0, I), p(x|z) = N(W z + b, sigma^2 I): p(x) = N(b, W W^T + sigma^2 I) exactly, and the
    posterior p(z|x) is Gaussian with a known mean and covariance."""
    g = torch.Generator().manual_seed(seed)
    w, b = torch.randn(pixels, latent, generator=g), torch.randn(pixels, generator=g)
    x = torch.randn(rows, latent, generator=g) @ w.T + b + sigma * torch.randn(rows, pixels, generator=g)
    exact = torch.distributions.MultivariateNormal(b, w @ w.T + sigma**2 * torch.eye(pixels)).log_prob(x)
    precision = w.T @ w / sigma**2 + torch.eye(latent)
    covariance = torch.linalg.inv(precision)
    posterior_mean = (x - b) @ w @ covariance.T / sigma**2

    def log_joint(z):
        mean = z @ w.T + b
        log_lik = (-0.5 * ((x - mean) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)).sum(-1)
        return log_lik + (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(-1)

    return log_joint, exact, posterior_mean, covariance


def test_schedule_runs_from_zero_to_one():
    betas = sigmoid_schedule(50)
    assert betas[0] == 0 and betas[-1] == 1 and (betas.diff() > 0).all()


def test_ais_matches_the_closed_form_within_its_error():
    torch.manual_seed(0)
    log_joint, exact, mean, covariance = linear_gaussian()
    rows, latent = mean.shape
    start_mu = mean + 0.5  # a start that misses the posterior, as an encoder does
    start_logvar = torch.zeros(rows, latent)
    config = AisConfig(num_chains=64, num_temperatures=300, leapfrog_steps=5)  # standard errors near 0.05
    result = anneal(log_joint, gaussian_start(start_mu, start_logvar), config, torch.Generator().manual_seed(1))
    error = (result.log_px_y - exact.double()).abs()
    print(f"|AIS - exact| {error.numpy().round(4)}, standard errors {result.std_error.numpy().round(4)}")
    assert (error <= 4 * result.std_error + 0.02).all()
    assert error.mean() <= 0.1
    assert ((result.acceptance > 0.4) & (result.acceptance < 0.95)).all()


def test_ais_from_the_posterior_itself_is_exact():
    """Started from the exact posterior (diagonal here: a one-dimensional latent), every chain's
    weight is log p(x) exactly: the check that the weights are accumulated right."""
    log_joint, exact, mean, covariance = linear_gaussian(seed=1, latent=1)
    logvar = torch.log(covariance.diagonal()).expand_as(mean)
    config = AisConfig(num_chains=4, num_temperatures=20, leapfrog_steps=3)
    result = anneal(log_joint, gaussian_start(mean, logvar), config, torch.Generator().manual_seed(2))
    assert torch.allclose(result.log_w, exact.double().expand_as(result.log_w), atol=1e-3)


def test_one_temperature_from_the_proposal_is_importance_sampling_from_q():
    """With a single temperature AIS weighs the start's draws by p(x, z|y) / f_0(z) and no more:
    started from q with its coupling flow, that is the served importance sampler, draw for draw."""
    from training.anneal import cvae_log_joint, proposal_start
    from training.model import CVAE, ModelConfig
    from training.objectives import log_weights

    torch.manual_seed(0)
    model = CVAE(ModelConfig(latent_dim=4, hidden_dims=(16,), flow_layers=2, flow_hidden=8))
    with torch.no_grad():
        for parameter in model.flow.parameters():  # away from the identity it starts as
            parameter.normal_(0.0, 0.3)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    x = (torch.rand(3, 784, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    y = torch.eye(10)[[0, 4, 7]]
    config = AisConfig(num_chains=5, num_temperatures=1, leapfrog_steps=2)
    result = anneal(cvae_log_joint(model, x, y), proposal_start(model, x, y), config, torch.Generator().manual_seed(3))
    expected, _ = log_weights(model, x, y, 5, torch.Generator().manual_seed(3))
    assert torch.allclose(result.log_w, expected.double(), atol=1e-4)
    eps = torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(4))
    assert not torch.allclose(model.flow(eps, model.encode_with_context(x, y)[2])[0], eps, atol=0.05)  # a real flow


def test_an_unknown_start_is_refused_naming_the_choices():
    from training.anneal import cvae_log_px_y
    from training.model import CVAE, ModelConfig

    model = CVAE(ModelConfig(latent_dim=2, hidden_dims=(8,)))
    with pytest.raises(ValueError, match="encoder, prior, proposal"):
        cvae_log_px_y(model, torch.zeros(1, 784), torch.eye(10)[:1], AisConfig(start="posterior"), torch.Generator())
