"""Request and response bodies of the /v1 API, with the examples /docs shows."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

# A 28x28 greyscale PNG of a "3", drawn by the shipped model (the Bernoulli means of one sample): the
# example image of /docs, small enough to read and to send with "Try it out".
DIGIT_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAABwAAAAcCAAAAABXZoBIAAABN0lEQVR42mNgoD9gRuUyMrOzMvzHpk6++u7nb9+/vtnJhy7FqHf6658/"
    "vz4/e/bpvR8jmpzcvV+/vj0oVxMLuP0uEirJApPl+//5VsPh7wzMvwV/nUa3lcvdgoORgZHF992PeUwYdrIwMzIwCve8/XGODYtj2dhEA3Y+"
    "eL6UB1OOkSdu2cNPH58vlmfElGTyvP399+9vr0+GsGAJIQEPnm/PHv+X8vpxCoudorICnBxyC969MMUZ2GwLP25At5URJsBo+eo8zC9Q/zKy"
    "s0NZ/9/9/sfKgBJ8rF5/Dn76z8DAwMDkyP72F6qpoifPp3IyMjAwMBo9eJ2CZiff+S/P6yQ5OCVqXnw5gx5ETNlvf3x5fOvhhx/fzylg+ICl"
    "6NmPP3///vm2WwJL8DGKlB+593CbIyvt0y0Aibtyk/SRVA4AAAAASUVORK5CYII="
)

ImageInput = Annotated[
    Any,
    WithJsonSchema(
        {
            "description": "One image: 784 numbers, 28 rows of 28 numbers, or a base64 PNG (28x28, greyscale "
            "or with ink in the alpha channel; a data: URL is accepted). With preprocess 'mnist', a PNG of any "
            "size or rows of any equal length (see limits.max_image_side and max_request_pixels of /v1/model). "
            "Numbers lie in [0, 1], "
            "or are integers 0-255 (see pixel_scale). Bright pixels (1 or 255) are ink, dark ones background, "
            "as in MNIST; for dark ink on a light background send invert: true.",
            "anyOf": [
                {"type": "string", "title": "base64 PNG"},
                {"type": "array", "items": {"type": "number"}, "title": "784 numbers"},
                {"type": "array", "items": {"type": "array", "items": {"type": "number"}}, "title": "rows"},
            ],
        }
    ),
]


class ImagesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    images: list[ImageInput] = Field(..., min_length=1, description="The images, one entry each.")
    pixel_scale: Literal["auto", "unit", "byte"] = Field(
        "auto", description="'unit': values in [0, 1]; 'byte': integers 0-255; 'auto': 'byte' if any value exceeds 1."
    )
    binarize: Literal["threshold", "bernoulli", "none"] = Field(
        "threshold",
        description="How grey pixels become the binary pixels the Bernoulli likelihood is defined on: "
        "'threshold' sets x = 1 where pixel > threshold; 'bernoulli' draws x ~ Bernoulli(pixel) with the seed "
        "(as the model was trained); 'none' uses pixels as sent (they must then already be 0 or 1).",
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


class Binarization(BaseModel):
    method: str
    threshold: float | None = None


class Preparation(BaseModel):
    invert: bool
    preprocess: str


class InputWarning(BaseModel):
    code: Literal["reversed_polarity", "nearly_empty"]
    message: str = Field(description="What looks wrong with the image and what to do.")


class ScoreRequest(ImagesRequest):
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
    return_x: bool = Field(
        False,
        description="Also return, per image, the binary pixels x that were scored (after invert, preprocess and "
        "binarize): to see what the model saw.",
    )
    ood_fpr: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="False-positive rate of the out-of-distribution flag: the share of genuine digits it may flag "
        "(default: see GET /v1/model, 0.01). Lower flags less, higher catches more.",
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"images": [DIGIT_PNG], "num_samples": 1000, "tolerance": 0.3, "seed": 0}]},
    )


class ClassifyRequest(ScoreRequest):
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
        "p(predicted|x) < min_probability; critic_probs is returned either way. The default min_probability was "
        "chosen with the vote: the model card's validation curve without it suggests a threshold on p(predicted|x) "
        "alone.",
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"images": [DIGIT_PNG], "min_probability": 0.9, "seed": 0}]},
    )


class OutOfDistribution(BaseModel):
    score: float | None = Field(
        description="log p(x) - log p_background(x) in nats: how much better the digit model explains the image "
        "than a model of local strokes and blank space alone. Digits score high (validation median about +22); "
        "blank pages, scribbles, reversed polarity, noise and other glyphs score low. Null when log p(x) is."
    )
    distance: float | None = Field(
        description="Mahalanobis distance of six numbers from the validation digits': score, log p(x), "
        "log(1 + ink pixels), log(log p(x) - ELBO), log(1 + the margin of log p(x|y) between the two best "
        "classes) and KL(q(z|x,y) || p(z)). Validation digits lie at a median of 2.2; null when a number is "
        "not finite (the image is then as far as it gets)."
    )
    critic: float | None = Field(
        description="The critic's log-odds that the image is a handwritten digit rather than anything else: a small "
        "network trained on the training digits against printed characters and reshaped digits. Validation digits "
        "lie at a median of about +6; printed letters and symbols mostly below 0. Null when not finite."
    )
    p_value: float = Field(
        description="Chance that a genuine digit is at least this unusual. The distance and the critic are each "
        "ranked against the first half of the held-out validation digits (p_d: distances at least this large, "
        "p_c: critics at most this low; past the most extreme, an exponential tail), combined as "
        "-2 [(1 - w) log p_d + w log p_c] with the critic's weight w from the model's calibration (its manifest's "
        "files.ood.critic_weight in GET /v1/model: 0.85 for the shipped models; 0.5 weighs both alike), and the "
        "p-value is the share of the second half's combined numbers at least as large, counting this image. The "
        "flag uses this p-value."
    )
    p_value_score: float = Field(
        description="Share of all validation digits whose score is at most this one's: says whether the ratio "
        "is what is unusual (explanation only, not the flag)."
    )
    p_value_log_px: float = Field(
        description="Share of validation digits whose log p(x) is at most this one's (explanation only)."
    )
    p_value_ink: float = Field(
        description="Twice the share of validation digits with at most (or at least, whichever is smaller) this "
        "image's number of ink pixels: too little or too much ink for a digit (explanation only)."
    )
    p_value_critic: float = Field(
        description="Share of all validation digits whose critic is at most this one's: says whether the critic "
        "is what finds the image unusual (explanation only)."
    )
    fpr: float = Field(description="The false-positive rate the flag was set at.")
    nearly_empty: bool = Field(
        description="Fewer than 10 pixels are ink (every MNIST training digit has at least 15): flagged whatever "
        "the p-values say."
    )
    flagged: bool = Field(description="p_value <= fpr, or nearly_empty: the image does not look like an MNIST digit.")


class Elbo(BaseModel):
    value: float | None = Field(
        description="ELBO of log p(x) with q(y|x) = p(y|x): reconstruction - kl_z - kl_y (nats)."
    )
    reconstruction: float | None = Field(description="sum_y q(y|x) E_q(z|x,y)[log p(x|z,y)] (nats).")
    kl_z: float | None = Field(
        description="sum_y q(y|x) KL(q(z|x,y) || p(z)), each KL the mean of log q(z|x,y) - log p(z) over the samples "
        "drawn (nats)."
    )
    kl_y: float | None = Field(description="KL(q(y|x) || p(y)) (nats).")


class Precision(BaseModel):
    tolerance: float | None = Field(description="The target standard error of log p(x) (nats); null: none.")
    met: bool = Field(
        description="log_px_std_error is at most the tolerance and log_px_reliable holds (true when no tolerance)."
    )
    num_samples_used: int = Field(description="Importance samples spent on this image, all classes together.")


class ImageScore(BaseModel):
    log_px: float | None = Field(
        description="Estimate of log p(x) in nats, marginalized over classes (null: every weight was zero)."
    )
    log_px_std_error: float | None = Field(
        description="Standard error of log_px (delta method over the weights): the seed-to-seed spread to expect. "
        "Trust it only when log_px_reliable is true; null when it cannot be estimated."
    )
    log_px_reliable: bool = Field(
        description="Every class with p(y|x) >= 0.001 has Pareto k-hat within its threshold: the weights have a "
        "light enough tail for log_px and its standard error to mean what they say. When false, both are likely "
        "too low: ask for more samples (num_samples, tolerance)."
    )
    bits_per_dim: float | None = Field(description="-log p(x) / (pixels x ln 2).")
    log_px_y: list[float | None] = Field(description="Estimate of log p(x|y) for every class y (nats).")
    log_px_y_std_error: list[float | None]
    effective_sample_size: list[float] = Field(description="(sum w)^2 / sum w^2 of the weights, per class.")
    pareto_k: list[float | None] = Field(
        description="Pareto k-hat of each class's weights (Vehtari et al., 2024): the shape of a generalized Pareto "
        "fit to the largest weights. Below 0.5 the variance is finite and the standard error holds; above "
        "min(1 - 1/log10(K), 0.7) the estimate is unreliable. Null below 25 samples, too few to fit."
    )
    num_samples_used: list[int] = Field(
        description="Importance samples spent on each class (adaptive: fewer on classes that cannot matter; "
        "rounds: more where the tolerance needed them)."
    )
    precision: Precision
    elbo: Elbo
    out_of_distribution: OutOfDistribution | None = Field(
        description="Whether the image looks like the digits the model was trained on (null: the model has no "
        "calibration for it)."
    )
    warnings: list[InputWarning] = Field(description="What looks unlike an MNIST digit in this image (empty: nothing).")
    x: list[float] | None = Field(
        None, description="The pixels that were scored, row-major 28x28, when return_x was true."
    )


class ScoreResponse(BaseModel):
    num_samples: int
    tolerance: float | None
    max_num_samples: int
    adaptive: bool
    seed: int
    binarization: Binarization
    preparation: Preparation
    ood_fpr: float | None = Field(description="The false-positive rate of the out-of-distribution flags.")
    results: list[ImageScore]


class ImageClass(BaseModel):
    probs: list[float] = Field(description="p(y|x) for every class, by Bayes' rule.")
    predicted: int = Field(description="argmax_y p(y|x).")
    probability: float = Field(description="p(predicted|x).")
    entropy: float = Field(description="Entropy of p(y|x) in nats (0: certain; ln 10: uniform).")
    log_px: float | None
    log_px_std_error: float | None
    log_px_reliable: bool
    precision: Precision
    out_of_distribution: OutOfDistribution | None = Field(
        description="Whether the image looks like the digits the model was trained on (null: the model has no "
        "calibration for it)."
    )
    critic_probs: list[float] | None = Field(
        None,
        description="A second opinion: the critic's probabilities of the ten digits (a convolutional classifier "
        "trained on the same digits, the out-of-distribution assessment's network), used only to decide abstention "
        "(when critic_vote); "
        "`probs` stays Bayes' rule. Null when the model has no calibration or its critic gives no digit "
        "probabilities.",
    )
    abstained: bool = Field(description="True when `predicted` should not be relied on; `abstain_reasons` says why.")
    abstain_reasons: list[Literal["out_of_distribution", "low_probability", "critic_disagrees"]] = Field(
        description="out_of_distribution: the image was flagged as unlike the training digits; low_probability: "
        "p(predicted|x) is below min_probability; critic_disagrees (when critic_vote): the critic gives `predicted` "
        "a probability below min_probability (the critic doubts the class, and on validation digits most of Bayes' "
        "rule's errors are among such images)."
    )
    warnings: list[InputWarning] = Field(description="What looks unlike an MNIST digit in this image (empty: nothing).")
    x: list[float] | None = Field(
        None, description="The pixels that were scored, row-major 28x28, when return_x was true."
    )


class ClassifyResponse(BaseModel):
    num_samples: int
    tolerance: float | None
    max_num_samples: int
    adaptive: bool
    seed: int
    binarization: Binarization
    preparation: Preparation
    ood_fpr: float | None = Field(description="The false-positive rate of the out-of-distribution flags.")
    min_probability: float = Field(
        description="The probability below which an answer abstains: p(predicted|x) by Bayes' rule and the "
        "critic's probability of `predicted` (when critic_vote) must both reach it."
    )
    critic_vote: bool = Field(
        description="Whether the critic's probability of `predicted` counted: false when the request said so, or "
        "when the model has no critic digit probabilities (no calibration, or a critic without them)."
    )
    results: list[ImageClass]


class EncodeRequest(ImagesRequest):
    y: int | None = Field(None, description="Class to condition q(z|x,y) on; omit for every class.")
    seed: int | None = Field(
        None, ge=0, lt=2**63, description="Seed for binarize='bernoulli'; omit for a fresh one (the answer gives it)."
    )

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"images": [DIGIT_PNG], "y": 3}]})


class Posterior(BaseModel):
    y: int
    mu: list[float]
    std: list[float]


class EncodeResponse(BaseModel):
    seed: int
    binarization: Binarization
    preparation: Preparation
    results: list[list[Posterior]] = Field(description="Per image, q(z|x,y) for each class asked for.")


class SampleRequest(BaseModel):
    n: int | None = Field(None, ge=1, description="How many images (default 1; with z given, one per z).")
    y: int | None = Field(None, description="Class of every image; omit to draw y ~ p(y).")
    z: list[list[float]] | None = Field(
        None, min_length=1, description="Latent vectors, one image each; omit to draw z ~ N(0, I)."
    )
    seed: int | None = Field(
        None, ge=0, lt=2**63, description="Makes the answer reproducible; omit for fresh draws (the answer gives it)."
    )
    binary: bool = Field(False, description="Also return one binary draw x ~ p(x|z,y) per image.")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"n": 4, "y": 7, "seed": 1}]})


class InterpolateRequest(BaseModel):
    z_from: list[float] = Field(..., description="Start point in latent space.")
    z_to: list[float] = Field(..., description="End point in latent space.")
    steps: int = Field(8, ge=2, description="Images along the path, both ends included.")
    y: int | None = Field(None, description="Class of every image; omit to draw one class for the whole path.")
    spherical: bool = Field(True, description="Slerp (keeps latent norms typical of N(0, I)) rather than a line.")
    seed: int | None = Field(
        None, ge=0, lt=2**63, description="Seed of the class draw and binary draws; omit for fresh ones."
    )
    binary: bool = False

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"z_from": [-1.0] * 16 + [0.5] * 16, "z_to": [0.5] * 16 + [-1.0] * 16, "steps": 8, "y": 4}]
        },
    )


class Sample(BaseModel):
    y: int
    z: list[float]
    mean: list[float] = Field(description="Bernoulli means sigmoid(logits), row-major 28x28.")
    x: list[int] | None = Field(None, description="A binary draw x ~ p(x|z,y), when binary=true.")


class SampleResponse(BaseModel):
    seed: int
    samples: list[Sample]


class Problem(BaseModel):
    field: str
    message: str


class ErrorResponse(BaseModel):
    error: str = Field(description="What went wrong and how to fix it, in one line.")
    problems: list[Problem] = Field(default_factory=list, description="Each bad field and its fix.")


class ModelInfo(BaseModel):
    name: str
    version: str
    description: str | None = None
    latent_dim: int
    num_classes: int
    class_names: list[str]
    image_shape: list[int]
    likelihood: dict
    class_prior: list[float]
    metrics: dict
    requested_providers: list[str]
    active_providers: list[str]
    limits: dict
    manifest: dict


class ModelVersion(BaseModel):
    name: str
    version: str
    state: str = Field(
        description="loading, ready (takes traffic), failed (never took traffic: see reason), unloading (finishing "
        "its requests) or unloaded"
    )
    reason: str | None = Field(None, description="why the version failed its checks or was unloaded")
    path: str | None = None
    in_flight: int = Field(0, description="requests running on this version now")
    loaded_at: float | None = Field(None, description="when it became ready, seconds since the epoch")
    description: str | None = Field(None, description="what the manifest says distinguishes this version")
    metrics: dict | None = Field(None, description="test -log p(x) (nll) and accuracy from the manifest")
    default: bool = Field(False, description="requests that name no model or version get this one")
    default_model: bool = Field(False, description="this is a version of the default model")
    pinned: bool = Field(False, description="loaded by request: kept until unloaded by request")
    update: dict | None = Field(None, description="a replacement of this version that is loading or failed")


class ModelList(BaseModel):
    models: list[ModelVersion]
    refused: dict[str, str] = Field(
        default_factory=dict, description="folders of the repository that are not model versions, with the reason"
    )
