"""The options of reading and scoring images, each declared once: its name, default, bounds and meaning.

The request bodies (service.schemas.requests) are these plus the images; the engine
(service.engine.scoring) takes them as one object and fills in the service's defaults; the answer echoes
them (include 'settings'); the settings that hold the service's defaults (service.settings) take
their bounds and meanings from here, and so do docs/answers.md and the client (client.api).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo

INCLUDE = {
    "estimates": "per class: log p(x|y) with its standard error, effective sample size, Pareto k-hat and the "
    "samples spent; the entropy of p(y|x)",
    "elbo": "the ELBO of log p(x) split into reconstruction and KL terms",
    "ood": "the out-of-distribution verdict's parts: score, distance, critic log-odds and the p-values that explain it",
    "critic": "critic_probs: the critic's probabilities of the classes, a second opinion on the class",
    "x": "the binary pixels that were scored, after invert, preprocess and binarize",
    "settings": "every setting the answer used, defaults included",
}
Include = Literal[tuple(INCLUDE)]


class Options(BaseModel):
    """Every options group: an unknown field, or a number that is not finite (NaN, or 1e400 read as
    infinity), is refused naming its field."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ImageOptions(Options):
    """How images are read and made binary."""

    pixel_scale: Literal["auto", "unit", "byte"] = Field(
        "auto", description="'unit': values in [0, 1]; 'byte': integers 0-255; 'auto': 'byte' if any value exceeds 1."
    )
    binarize: Literal["threshold", "bernoulli", "none"] | None = Field(
        None,
        description="How grey pixels become the binary pixels the Bernoulli likelihood is defined on: "
        "'threshold' sets x = 1 where pixel > threshold; 'bernoulli' draws x ~ Bernoulli(pixel) with the seed "
        "(as the model was trained); 'none' uses pixels as sent (they must then already be 0 or 1). Omitted: "
        "'threshold' for a Bernoulli model, 'none' for a model of grey levels (its likelihood in /v1/model), "
        "which scores the 256 levels as sent.",
    )
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="The cut-off for binarize='threshold'.")
    invert: bool = Field(
        False, description="Use 1 - pixel: for images drawn dark on light, such as the tiles of /v1/samples.png."
    )
    preprocess: Literal["none", "mnist"] = Field(
        "none",
        description="'mnist' prepares free-form drawings of any size as MNIST's digits were made: crop to the ink, "
        "scale into a 20x20 box keeping the aspect ratio (anti-aliased), centre the centre of mass in the 28x28 "
        "field (after invert). 'none': images must be 28x28.",
    )


class ScoreOptions(Options):
    """How log p(x|y), log p(x) and the out-of-distribution verdict are estimated."""

    num_samples: int | None = Field(
        None,
        ge=2,
        description="Importance samples K per image and class in the first round, at least 2 so that a standard "
        "error exists (default and maximum: see GET /v1/model).",
    )
    tolerance: float | None = Field(
        None,
        gt=0,
        description="Target standard error of log p(x) in nats: after the first round, the classes that matter "
        "double their samples until log_px_std_error is at most this and every such class has reliable weights "
        "(Pareto k-hat), or max_num_samples is reached. Omit for the service's default (see GET /v1/model).",
    )
    max_num_samples: int | None = Field(
        None,
        ge=2,
        description="Most importance samples per class that rounds may reach; at most the service's limit, which "
        "is also the default. Set it to num_samples for a single round.",
    )
    seed: int | None = Field(
        None,
        ge=0,
        lt=2**63,
        description="Seed of the importance-sampling noise (and of binarize='bernoulli'); omit for a fresh one. "
        "The answer gives the seed it used, which reproduces it exactly.",
    )
    adaptive: bool = Field(
        True,
        description="Screen every class with a few samples, then spend all num_samples only on the classes "
        "within the margin of the best (see GET /v1/model); false spends num_samples on every class.",
    )
    ood_fpr: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="False-positive rate of the out-of-distribution flag: the share of genuine digits it may flag "
        "(default: see GET /v1/model, 0.01). Lower flags less, higher catches more.",
    )


class ClassifyOptions(ScoreOptions):
    """How the class is judged too: when to abstain."""

    min_probability: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Abstain when p(predicted|x), or the critic's probability of the predicted class (when "
        "critic_vote), is below this (default: see GET /v1/model; 0 never abstains for these reasons). The answer "
        "keeps p(y|x) either way.",
    )
    critic_vote: bool = Field(
        True,
        description="Whether the critic's vote on the class counts (abstain reason critic_disagrees). false: abstain "
        "only when flagged out of distribution (a flag that still weighs the critic's log-odds) or when "
        "p(predicted|x) < min_probability; critic_probs (include 'critic') is returned either way. The default "
        "min_probability was chosen with the vote: the model card's validation curve without it suggests a "
        "threshold on p(predicted|x) alone.",
    )


# What an answer echoes (include 'settings') as it used them: every option but the seed, which every answer
# gives, and pixel_scale, whose 'auto' is judged per image; /v1/log-likelihood leaves ClassifyOptions' own out.
ECHOED = (
    *("num_samples", "tolerance", "max_num_samples", "adaptive"),
    *("binarize", "threshold", "invert", "preprocess"),
    *("ood_fpr", "min_probability", "critic_vote"),
)


def of(group: type[Options], values: BaseModel) -> Options:
    """The options of `group` that `values` (a request) holds."""
    return group.model_validate(values.model_dump(include=set(group.model_fields)))


def default_of(name: str, default, meaning: str, **bounds) -> FieldInfo:
    """The field of a setting that holds the service's default of option `name`: the option's bounds
    (or `bounds`, where the setting has a value of its own meaning "none"), its own default and
    `meaning`, what a request that leaves the option out then gets."""
    field = Field(default, description=f"the default of a request's {name}: {meaning}", **bounds)
    if not bounds:
        field.metadata = list(ClassifyOptions.model_fields[name].metadata)
    return field
