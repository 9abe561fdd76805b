import math

import pytest

torch = pytest.importorskip("torch")

from training.model import CVAE, ModelConfig  # noqa: E402
from training.objectives import (  # noqa: E402
    bayes_posterior,
    bernoulli_log_prob,
    gaussian_log_prob,
    iwae_bound,
    kl_standard_normal,
    log_mean_exp,
    log_normal,
    log_px_z,
    log_standard_normal,
    log_weights,
)


def tiny_model(likelihood="bernoulli"):
    torch.manual_seed(0)
    return CVAE(ModelConfig(latent_dim=4, hidden_dims=(16,), likelihood=likelihood))


def test_k1_bound_equals_single_sample_elbo():
    model = tiny_model()
    x = torch.rand(5, 784).round()
    y = torch.eye(10)[[0, 1, 2, 3, 4]]
    log_w, _ = log_weights(model, x, y, 1, torch.Generator().manual_seed(3))
    mu, logvar = model.encode(x, y)
    eps = torch.randn((1, 5, 4), generator=torch.Generator().manual_seed(3))
    z = mu + torch.exp(0.5 * logvar) * eps
    elbo = log_px_z(model.decode(z, y[None]), x, model.config) + log_standard_normal(z) - log_normal(z, mu, logvar)
    assert torch.allclose(iwae_bound(log_w), elbo[0], atol=1e-4)


def test_bound_tightens_with_more_samples():
    model = tiny_model()
    x = torch.rand(20, 784).round()
    y = torch.eye(10)[torch.arange(20) % 10]
    g = torch.Generator().manual_seed(0)
    k1 = torch.stack([iwae_bound(log_weights(model, x, y, 1, g)[0]) for _ in range(50)]).mean()
    k50 = torch.stack([iwae_bound(log_weights(model, x, y, 50, g)[0]) for _ in range(50)]).mean()
    assert k50 > k1


def test_log_mean_exp_is_stable_near_minus_1e4():
    values = torch.tensor([[-1e4, -1e4 + math.log(3.0)]], dtype=torch.float64).T
    expected = -1e4 + math.log((1 + 3) / 2)
    assert log_mean_exp(values, dim=0).item() == pytest.approx(expected, abs=1e-9)
    assert torch.isfinite(log_mean_exp(torch.full((5000, 3), -1e4), dim=0)).all()
    assert log_mean_exp(torch.full((4, 1), -float("inf")), dim=0).item() == -float("inf")


def test_closed_form_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mu = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    logvar = torch.tensor([[0.3, -0.7, 0.1]], dtype=torch.float64)
    z = mu + torch.exp(0.5 * logvar) * torch.randn((200_000, 1, 3), generator=g, dtype=torch.float64)
    monte_carlo = (log_normal(z, mu, logvar) - log_standard_normal(z)).mean()
    assert kl_standard_normal(mu, logvar).item() == pytest.approx(monte_carlo.item(), abs=0.02)


def test_bernoulli_log_prob_is_minus_binary_cross_entropy():
    logits = torch.randn(3, 784, dtype=torch.float64)
    x = torch.rand(3, 784, dtype=torch.float64).round()
    p = torch.sigmoid(logits)
    bce = -(x * p.log() + (1 - x) * (1 - p).log()).sum(-1)
    assert torch.allclose(bernoulli_log_prob(logits, x), -bce, atol=1e-8)
    reference = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    assert torch.allclose(bernoulli_log_prob(logits, x), -reference, atol=1e-8)


def test_bernoulli_log_prob_is_finite_for_saturated_logits():
    logits = torch.tensor([[-200.0, 200.0, -200.0, 200.0]])
    x = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    assert bernoulli_log_prob(logits, x).item() == pytest.approx(-400.0)


def test_gaussian_log_density_is_normalized():
    # One pixel: integrate exp(log N(x | sigmoid(logit), sigma^2)) over x on a fine grid.
    sigma = 0.1
    grid = torch.linspace(-2, 3, 200_001, dtype=torch.float64)[:, None]
    density = gaussian_log_prob(torch.tensor([[0.7]], dtype=torch.float64), grid, sigma).exp()
    integral = torch.trapezoid(density, grid[:, 0])
    assert integral.item() == pytest.approx(1.0, abs=1e-6)


def test_gaussian_option_trains_a_finite_bound():
    model = tiny_model("gaussian")
    x = torch.rand(4, 784)
    log_w, _ = log_weights(model, x, torch.eye(10)[:4], 3)
    assert torch.isfinite(log_w).all()


def test_bayes_rule_normalizes_over_classes():
    log_joint = torch.tensor([[-100.0, -101.0, -130.0]], dtype=torch.float64)
    log_px, log_py_x = bayes_posterior(log_joint)
    assert log_py_x.exp().sum().item() == pytest.approx(1.0, abs=1e-6)
    assert log_px.item() == pytest.approx(-100 + math.log(1 + math.exp(-1) + math.exp(-30)), abs=1e-5)
