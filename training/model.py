"""The class-conditional VAE: q(z|x,y), p(x|z,y), p(z) = N(0, I)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn


@dataclass
class ModelConfig:
    """Every size the model needs; saved in the checkpoint and the manifest."""

    image_shape: tuple[int, int] = (28, 28)
    num_classes: int = 10
    latent_dim: int = 32
    hidden_dims: tuple[int, ...] = (512, 512)
    likelihood: str = "bernoulli"  # or "gaussian" (fixed variance, mean = sigmoid(logits))
    gaussian_sigma: float = 0.1

    @property
    def x_dim(self) -> int:
        return self.image_shape[0] * self.image_shape[1]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        values = dict(values)
        values["image_shape"] = tuple(values["image_shape"])
        values["hidden_dims"] = tuple(values["hidden_dims"])
        return cls(**values)

    def __post_init__(self) -> None:
        if self.likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', not {self.likelihood!r}")


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
        last = len(self.layers) - 1
        for i, (layer, class_layer) in enumerate(zip(self.layers, self.class_layers)):
            h = layer(h) + class_layer(y)
            if i < last:
                h = self.activation(h)
        return h


class CVAE(nn.Module):
    """Encoder q(z|x,y) = N(mu, diag exp(logvar)); decoder logits of p(x|z,y)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoder = ConditionedMLP(config.x_dim, config.num_classes, config.hidden_dims, 2 * config.latent_dim)
        self.decoder = ConditionedMLP(
            config.latent_dim, config.num_classes, tuple(reversed(config.hidden_dims)), config.x_dim
        )

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, 784], y one-hot [N, C] -> mu, logvar [N, D]."""
        mu, logvar = self.encoder(x, y).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """z [..., D], y one-hot [..., C] -> logits [..., 784]."""
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
