"""The settings of the training commands, as dataclasses that import no PyTorch: `cvae --help` lists them on
the base install, and each command builds from them.

A field's metadata says which values it takes (`choices`, or numbers `at_least` and `at_most`); argparse
(training.cli) and each config's __post_init__ both check a value by `problem`, so a bad one is refused the
same way on the command line, naming the flag, and in code, naming the field.
"""

from __future__ import annotations

import re
from dataclasses import Field, asdict, dataclass, field, fields


def option(default, *, choices=None, at_least=None, at_most=None, help=None):
    """A dataclass field with its default, the values it takes, and what it means (its flag's --help)."""
    given = {"choices": choices, "at_least": at_least, "at_most": at_most, "help": help}
    return field(default=default, metadata={key: value for key, value in given.items() if value is not None})


def problem(f: Field, value) -> str | None:
    """What is wrong with `value` (one item, for a tuple field) as field `f`'s, or None."""
    choices, at_least, at_most = (f.metadata.get(key) for key in ("choices", "at_least", "at_most"))
    if choices is not None and value not in choices:
        return f"must be one of {', '.join(choices)}, not {value!r}"
    if at_least is not None and value < at_least:
        return f"must be at least {at_least}, not {value!r}"
    if at_most is not None and value > at_most:
        return f"must be at most {at_most}, not {value!r}"
    return None


def check(config) -> None:
    """ValueError naming the first field of `config` whose value (or an item of it) it does not take."""
    for f in fields(config):
        value = getattr(config, f.name)
        for item in value if isinstance(value, tuple) else (value,):
            if (text := problem(f, item)) is not None:
                raise ValueError(f"{f.name} {text}")


class Devices(tuple):
    """Torch device names, listed as --help shows them; `in` also takes every cuda:N (the GPU numbered N)."""

    def __contains__(self, value) -> bool:
        if not isinstance(value, str):
            return False
        return re.fullmatch(r"cuda:\d+", value) is not None or (value != "cuda:N" and tuple.__contains__(self, value))


DEVICES = Devices(("cpu", "cuda", "cuda:N"))
OBJECTIVES = ("iwae", "dreg")  # the bound's own gradient; doubly reparameterized for q (Tucker et al., 2019)
LIKELIHOODS = ("bernoulli", "logistic", "gaussian")  # training.objectives.log_px_z says what each is
STARTS = {
    "encoder": "the encoder's Gaussian widened 1.5x",
    "prior": "the prior N(0, I)",
    "proposal": "q(z|x,y) with its coupling flow, as the service draws from it",
}
# The critic's weight in the combination, chosen on both shipped models: the weight whose smallest AUROC over
# the design sets of bench.ood_sets (validation digits against DejaVu letters and glyphs, strokes, blank, noise,
# reversed and reshaped validation digits) is largest
CRITIC_WEIGHT = 0.85
OUTLIER_LIMIT = 1000  # images of each `cvae evaluate --outliers` set
MIN_REFERENCE = 4  # validation images `calibrate` needs: at least 2 in each half


@dataclass
class ModelConfig:
    """Every size the model needs; saved in the checkpoint and the manifest."""

    image_shape: tuple[int, int] = option((28, 28), at_least=1)
    num_classes: int = option(10, at_least=2)
    latent_dim: int = option(32, at_least=1)
    hidden_dims: tuple[int, ...] = option((512, 512), at_least=1)
    likelihood: str = option(
        "bernoulli",
        choices=LIKELIHOODS,
        help="p(x|z,y): bernoulli of binarized pixels; logistic: the 256 grey levels as stored (a discretized "
        "logistic per pixel); gaussian: grey levels, fixed variance",
    )
    gaussian_sigma: float = option(0.1, help="the gaussian likelihood's standard deviation")
    flow_layers: int = option(0, at_least=0, help="affine coupling layers on q's noise (0: q is the plain Gaussian)")
    flow_hidden: int = option(256, at_least=1, help="hidden units of each coupling layer")

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
        check(self)


@dataclass
class TrainConfig:
    epochs: int = option(100, at_least=1)
    batch_size: int = option(100, at_least=1)
    learning_rate: float = 1e-3
    final_learning_rate: float = option(1e-5, help="cosine decay from learning_rate to this")
    num_samples: int = option(5, at_least=1, help="k of the importance-weighted bound; 1 gives the ELBO")
    objective: str = option(
        "iwae", choices=OBJECTIVES, help="iwae: the bound's own gradient; dreg: doubly reparameterized for q"
    )
    elbo_weight: float = option(
        0.0, at_least=0.0, at_most=1.0, help="with dreg: the ELBO's share of the decoder's gradient, the rest IWAE's"
    )
    classify_weight: float = option(0.0, at_least=0.0, help="weight of the decoder-only Bayes'-rule cross-entropy")
    val_size: int = option(5000, at_least=1, help="training images held out for validation, chosen by the seed")
    seed: int = 0
    train_limit: int = option(
        0, at_least=0, help="a quick run: only the first N training images (0: all), validated on a like share"
    )
    threads: int = option(0, at_least=0, help="torch threads (0: torch's default)")
    device: str = option("cpu", choices=DEVICES, help="where to train; the checkpoint is saved for the CPU")

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class CriticConfig:
    epochs: int = option(20, at_least=1)
    num_outliers: int = option(
        240000, at_least=1, help="made-up non-digits, made once; each epoch pairs every training digit with one"
    )
    train_limit: int = option(0, at_least=0, help="only the first N training digits (0: all)")
    batch_size: int = option(128, at_least=1, help="digits per step, with as many non-digits")
    learning_rate: float = 1e-3
    width: int = option(2, at_least=1, help="channels and hidden units, as multiples of 32, 64 and 128")
    handwriting_share: float = option(
        0.5, at_least=0.0, at_most=1.0, help="with --outliers-dir, the share of non-digits that are real handwriting"
    )
    seed: int = 0
    device: str = option(
        "auto", choices=Devices(("auto", *DEVICES)), help="where it trains; auto: cuda when PyTorch sees a GPU"
    )

    def __post_init__(self) -> None:
        check(self)


@dataclass
class AisConfig:
    num_chains: int = option(16, at_least=1)
    num_temperatures: int = option(500, at_least=1)
    leapfrog_steps: int = option(10, at_least=1)
    initial_step_size: float = option(0.3, help="times the start's standard deviation, then adapted per row")
    target_acceptance: float = option(0.65, help="of the HMC moves, which the step size is adapted to")
    start: str = option("encoder", choices=tuple(STARTS), help="where the chains start (above)")

    def __post_init__(self) -> None:
        check(self)
