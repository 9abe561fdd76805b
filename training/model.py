"""The class-conditional VAE: q(z|x,y), p(x|z,y), p(z) = N(0, I)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from training.configs import ModelConfig


class ConditionedMLP(nn.Module):
    """An MLP whose every layer also sees the one-hot class y.

    Feeding y to each layer (not only the first) keeps the class from being
    washed out, so p(x|z,y) depends on y strongly enough for Bayes' rule.
    """

    def __init__(self, in_dim: int, num_classes: int, hidden_dims: tuple[int, ...], out_dim: int):
        super().__init__()
        dims = (in_dim, *hidden_dims, out_dim)
        self.layers = nn.ModuleList(nn.Linear(d_in, d_out) for d_in, d_out in zip(dims, dims[1:]))
        self.class_layers = nn.ModuleList(nn.Linear(num_classes, d_out, bias=False) for d_out in dims[1:])
        self.activation = nn.SiLU()

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.features(h, y)[0]

    def features(self, h: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The output and the last hidden layer (the input itself when there is none)."""
        last = len(self.layers) - 1
        hidden = h
        for i, (layer, class_layer) in enumerate(zip(self.layers, self.class_layers)):
            if i == last:
                hidden = h
            h = layer(h) + class_layer(y)
            if i < last:
                h = self.activation(h)
        return h, hidden


class AffineCoupling(nn.Module):
    """One affine coupling layer (Dinh et al., 2017, "Density estimation using Real NVP"):
    the dimensions where `mask` is 1 pass unchanged and set a shift t and log-scale s of the
    others, e' = e * exp(s) + t, both conditioned on a context vector. Starts as the identity."""

    max_log_scale = 1.5

    def __init__(self, mask: torch.Tensor, context_dim: int, hidden: int):
        super().__init__()
        self.register_buffer("mask", mask)
        dim = mask.numel()
        self.hidden = nn.Linear(dim, hidden)
        self.context = nn.Linear(context_dim, hidden, bias=False)
        self.out = nn.Linear(hidden, 2 * dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def _shift_log_scale(self, e: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """e [K, N, D], context [N, C] -> t, s [K, N, D], zero where mask is 1."""
        h = nn.functional.silu(self.hidden(e * self.mask) + self.context(context))
        t, s = self.out(h).chunk(2, dim=-1)
        free = 1 - self.mask
        return t * free, self.max_log_scale * torch.tanh(s) * free

    def forward(self, e: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """e -> e', log |det de'/de| [K, N]."""
        t, s = self._shift_log_scale(e, context)
        return e * torch.exp(s) + t, s.sum(-1)

    def inverse(self, e: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """e' -> e, log |det de'/de| [K, N] (of the forward map)."""
        t, s = self._shift_log_scale(e, context)  # the masked half is the same before and after
        return (e - t) * torch.exp(-s), s.sum(-1)


class CouplingFlow(nn.Module):
    """A stack of affine couplings on the standard-normal noise of q(z|x,y), so that
    z = mu + sigma * f(eps) can take shapes no Gaussian can. The masks alternate between
    even/odd and low/high halves of the latent dimensions."""

    def __init__(self, dim: int, context_dim: int, hidden: int, layers: int):
        super().__init__()
        index = torch.arange(dim)
        patterns = [(index % 2 == 0), (index < dim // 2), (index % 2 == 1), (index >= dim // 2)]
        self.layers = nn.ModuleList(AffineCoupling(patterns[i % 4].float(), context_dim, hidden) for i in range(layers))

    def forward(
        self, e: torch.Tensor, context: torch.Tensor, inverse: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """eps [K, N, D] -> f(eps) and log |det df/deps| [K, N]; with `inverse`, f(eps) -> eps."""
        log_det = 0.0  # becomes [K, N] at the first layer; a float keeps the traced graph free of fixed shapes
        for layer in reversed(self.layers) if inverse else self.layers:
            e, layer_log_det = layer.inverse(e, context) if inverse else layer(e, context)
            log_det = log_det + layer_log_det
        return e, log_det


class CVAE(nn.Module):
    """Encoder q(z|x,y): z = mu + sigma * f(eps), eps ~ N(0, I), with f a coupling flow
    (the identity when config.flow_layers is 0, making q Gaussian); decoder logits of p(x|z,y)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoder = ConditionedMLP(config.x_dim, config.num_classes, config.hidden_dims, 2 * config.latent_dim)
        outputs = 2 * config.x_dim if config.likelihood == "logistic" else config.x_dim  # the logistic: and scales
        self.decoder = ConditionedMLP(
            config.latent_dim, config.num_classes, tuple(reversed(config.hidden_dims)), outputs
        )
        self.flow = None
        if config.flow_layers:
            context_dim = config.hidden_dims[-1] if config.hidden_dims else config.x_dim
            self.flow = CouplingFlow(config.latent_dim, context_dim, config.flow_hidden, config.flow_layers)

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, 784], y one-hot [N, C] -> mu, logvar [N, D]."""
        mu, logvar = self.encoder(x, y).chunk(2, dim=-1)
        return mu, logvar

    def encode_with_context(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """mu, logvar [N, D] and the encoder's last hidden layer [N, H], the flow's context."""
        out, hidden = self.encoder.features(x, y)
        mu, logvar = out.chunk(2, dim=-1)
        return mu, logvar, hidden

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """z [..., D], y one-hot [..., C] -> the parameters of p(x|z,y): logits [..., 784] (and log-scales
        [..., 784] after them, for the logistic likelihood: training.objectives.split_output)."""
        return self.decoder(z, y)


def reparameterize(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    k: int,
    generator: torch.Generator | None = None,
    eps: torch.Tensor | None = None,
) -> torch.Tensor:
    """z = mu + sigma * eps, eps ~ N(0, I): mu, logvar [N, D] -> z [k, N, D].

    The noise is drawn from `generator`, or given as `eps` [k, N, D]."""
    if eps is None:
        eps = torch.randn((k, *mu.shape), generator=generator, dtype=mu.dtype, device=mu.device)
    return mu + torch.exp(0.5 * logvar) * eps


@dataclass
class Checkpoint:
    """What a saved model holds: its config and weights, plus training facts."""

    model_config: ModelConfig
    state_dict: dict
    class_prior: list[float]
    extra: dict = field(default_factory=dict)

    def save(self, path) -> None:
        torch.save(
            {
                "model_config": self.model_config.to_dict(),
                "state_dict": self.state_dict,
                "class_prior": self.class_prior,
                "extra": self.extra,
            },
            path,
        )

    @classmethod
    def load(cls, path) -> Checkpoint:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        return cls(
            ModelConfig.from_dict(raw["model_config"]),
            raw["state_dict"],
            list(raw["class_prior"]),
            raw.get("extra", {}),
        )

    def build_model(self) -> CVAE:
        model = CVAE(self.model_config)
        model.load_state_dict(self.state_dict)
        return model.eval()
