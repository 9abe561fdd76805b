"""The flow proposal: its density, its refit, and its export (synthetic digits, seconds)."""

import json
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from synthetic import synthetic_mnist  # noqa: E402

from training.export import export  # noqa: E402
from training.model import CVAE, ModelConfig  # noqa: E402
from training.objectives import (  # noqa: E402
    dreg_loss,
    log_px_z,
    log_q_at,
    log_standard_normal,
    log_weights,
    sample_q,
)
from training.refit import RefitConfig, refit  # noqa: E402
from training.train import TrainConfig, train  # noqa: E402

TINY = ModelConfig(latent_dim=4, hidden_dims=(32, 32))


def flow_model(seed=0) -> CVAE:
    """A tiny model whose flow is far from the identity (random output layers)."""
    torch.manual_seed(seed)
    model = CVAE(replace(TINY, flow_layers=4, flow_hidden=16))
    with torch.no_grad():
        for layer in model.flow.layers:
            layer.out.weight.normal_(0, 0.5)
            layer.out.bias.normal_(0, 0.5)
    return model.eval()


def test_flow_density_is_the_change_of_variables_of_its_samples():
    """log q of a sample, from the forward pass, equals log q evaluated at it through the inverse."""
    model = flow_model()
    x = torch.rand(5, 784).round()
    y = torch.eye(10)[[0, 1, 2, 3, 4]]
    with torch.no_grad():
        z, log_q, (mu, logvar, context) = sample_q(model, x, y, 7, torch.Generator().manual_seed(0))
        again = log_q_at(model, z, mu, logvar, context)
    assert torch.allclose(log_q, again, atol=1e-4)
    gaussian = torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).log_prob(z).sum(-1)
    assert (log_q - gaussian).abs().max() > 0.1  # the flow really reshapes q


def test_flow_log_density_is_the_log_jacobian_of_its_map():
    """log q(z) = log N(eps) - log |det dz/deps|, with the Jacobian taken by autograd."""
    model = flow_model(1)
    x = torch.rand(1, 784).round()
    y = torch.eye(10)[[2]]
    eps = torch.randn(1, 1, 4, generator=torch.Generator().manual_seed(1))

    def to_z(e):
        return sample_q(model, x, y, 1, eps=e.view(1, 1, 4))[0].view(4)

    with torch.no_grad():
        _, log_q, _ = sample_q(model, x, y, 1, eps=eps)
    jacobian = torch.autograd.functional.jacobian(to_z, eps.view(4))
    expected = log_standard_normal(eps.view(4)) - torch.linalg.slogdet(jacobian)[1]
    assert log_q.item() == pytest.approx(expected.item(), abs=1e-4)


def test_dreg_surrogate_gives_the_doubly_reparameterized_gradient():
    """Against the estimator written out: q's gradient sum_i w_i^2 d log w_i / d phi along the path
    (log q with q's parameters held fixed); p's gradient sum_i (a/k + (1-a) w_i) d log p(x, z_i) / d theta."""
    model = flow_model(2).train()
    x = torch.rand(3, 784, generator=torch.Generator().manual_seed(3)).round()
    y = torch.eye(10)[[1, 5, 7]]
    k, a = 6, 0.3
    params = dict(model.named_parameters())
    torch.manual_seed(4)
    loss, _ = dreg_loss(model, x, y, k, elbo_weight=a)
    got = torch.autograd.grad(loss, list(params.values()), allow_unused=True)

    torch.manual_seed(4)
    z, _, (mu, logvar, context) = sample_q(model, x, y, k)
    frozen = {name: p.detach() for name, p in model.flow.named_parameters()}

    def fixed(e, c, inverse=False):
        return torch.func.functional_call(
            model.flow, {**frozen, **dict(model.flow.named_buffers())}, (e, c), {"inverse": inverse}
        )

    log_q = log_q_at(model, z, mu.detach(), logvar.detach(), context.detach(), flow=fixed)
    log_joint = log_px_z(model.decode(z, y.expand(k, -1, -1)), x, model.config) + log_standard_normal(z)
    w = torch.softmax((log_joint - log_q).detach(), 0)
    q_names = [n for n in params if not n.startswith("decoder.")]
    p_names = [n for n in params if n.startswith("decoder.")]
    q_grads = torch.autograd.grad(
        -((w**2) * (log_joint - log_q)).sum(0).mean(), [params[n] for n in q_names], retain_graph=True
    )
    joint_fixed_z = log_px_z(model.decode(z.detach(), y.expand(k, -1, -1)), x, model.config)
    p_grads = torch.autograd.grad(-((a / k + (1 - a) * w) * joint_fixed_z).sum(0).mean(), [params[n] for n in p_names])
    by_name = dict(zip(params, got))
    for name, want in [*zip(q_names, q_grads), *zip(p_names, p_grads)]:
        assert torch.allclose(by_name[name], want, atol=1e-5, rtol=1e-4), name


@pytest.fixture(scope="module")
def refitted(tmp_path_factory):
    data = synthetic_mnist()
    config = TrainConfig(epochs=2, batch_size=50, num_samples=2, val_size=50)
    checkpoint = train(TINY, config, data)
    refit_config = RefitConfig(
        epochs=2, batch_size=50, num_samples=4, flow_layers=2, flow_hidden=16, val_images=20, val_samples=50
    )
    refitted = refit(checkpoint, refit_config, data)
    return refitted, export(refitted, tmp_path_factory.mktemp("flow"))


def test_refit_keeps_the_run_split_and_records_its_history(refitted):
    checkpoint, out = refitted
    record = checkpoint.extra["refit"]
    assert [h["epoch"] for h in record["history"]] == [0, 1, 2]
    assert record["validation"]["epoch"] == record["best_epoch"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["proposal"]["type"] == "coupling_flow" and manifest["proposal"]["flow_layers"] == 2
    assert manifest["refit"]["best_epoch"] == record["best_epoch"]


def test_flow_scorer_matches_pytorch(refitted):
    checkpoint, out = refitted
    model = checkpoint.build_model()
    assert model.flow is not None
    x = torch.rand(5, 784, generator=torch.Generator().manual_seed(1)).round()
    y = torch.eye(10)[[3, 1, 4, 1, 5]]
    eps = torch.randn((6, 5, 4), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        log_w, lpx_z = log_weights(model, x, y, 6, eps=eps)
    scorer = ort.InferenceSession(str(out / "scorer.onnx"), providers=["CPUExecutionProvider"])
    onnx_log_w, onnx_lpx_z, kl = scorer.run(None, {"x": x.numpy(), "y": y.numpy(), "eps": eps.numpy()})
    assert np.abs(onnx_log_w - log_w.numpy()).max() <= 1e-3
    assert np.abs(onnx_lpx_z - lpx_z.numpy()).max() <= 1e-3
    assert np.abs(kl - (lpx_z - log_w).mean(0).numpy()).max() <= 1e-3
    # other K and N than at export: no shape was fixed when the flow was traced
    eps = np.random.default_rng(0).standard_normal((3, 2, 4)).astype(np.float32)
    log_w, _, _ = scorer.run(None, {"x": x.numpy()[:2], "y": y.numpy()[:2], "eps": eps})
    assert log_w.shape == (3, 2)


def test_training_from_scratch_with_a_flow_on_the_doubly_reparameterized_gradient():
    """`cvae train --flow-layers N --objective dreg`: the bound improves and the flow is trained and exported."""
    data = synthetic_mnist()
    config = TrainConfig(epochs=3, batch_size=50, num_samples=4, objective="dreg", elbo_weight=0.5, val_size=50)
    checkpoint = train(replace(TINY, flow_layers=2, flow_hidden=16), config, data)
    history = checkpoint.extra["history"]
    assert history[-1]["train_bound"] > history[0]["train_bound"] and np.isfinite(history[-1]["val_bound_log_px"])
    assert any(name.startswith("flow.") for name in checkpoint.state_dict)
    assert checkpoint.extra["train_config"]["objective"] == "dreg"
    with pytest.raises(ValueError, match="objective must be"):
        train(TINY, replace(config, objective="elbo"), data)
