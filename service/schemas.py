"""Request and response bodies of the /v1 API, with the examples /docs shows."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, create_model

from service.answers import INCLUDE

Include = Literal[tuple(INCLUDE)]

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


class InputWarning(BaseModel):
    code: Literal["reversed_polarity", "nearly_empty"] = Field(
        description="reversed_polarity: the border is mostly bright (send invert: true for dark ink on light); "
        "nearly_empty: fewer than 10 ink pixels."
    )
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
    include: list[Include] = Field(
        [],
        description="Diagnostics to add to each image's answer: "
        + "; ".join(f"'{name}': {text}" for name, text in INCLUDE.items())
        + ".",
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
    flagged: bool = Field(
        description="The image does not look like an MNIST digit: p_value <= ood_fpr, or it is nearly empty (fewer "
        "than 10 ink pixels; every MNIST training digit has at least 15)."
    )
    p_value: float = Field(
        description="Chance that a genuine digit is at least this unusual (split conformal against held-out "
        "validation digits: the share of genuine digits flagged is ood_fpr, whatever the image). "
        "docs/out-of-distribution.md says how it is made."
    )
    score: float | None = Field(
        None,
        description="(include 'ood') log p(x) - log p_background(x) in nats: how much better the digit model explains "
        "the image than a model of local strokes and blank space alone. Digits score high; blank pages, scribbles, "
        "reversed polarity, noise and other glyphs score low. Null when log p(x) is.",
    )
    distance: float | None = Field(
        None,
        description="(include 'ood') Mahalanobis distance of six numbers of the answer from the validation digits' "
        "(the score, log p(x), ink, the ELBO's gap, the margin between the two best classes, KL of z); null when a "
        "number is not finite.",
    )
    critic: float | None = Field(
        None,
        description="(include 'ood') The critic's log-odds that the image is a handwritten digit rather than "
        "anything else.",
    )
    p_value_score: float | None = Field(
        None, description="(include 'ood') Share of validation digits whose score is at most this one's."
    )
    p_value_log_px: float | None = Field(
        None, description="(include 'ood') Share of validation digits whose log p(x) is at most this one's."
    )
    p_value_ink: float | None = Field(
        None,
        description="(include 'ood') Twice the smaller share of validation digits with at most, or at least, this "
        "image's ink pixels: too little or too much ink.",
    )
    p_value_critic: float | None = Field(
        None, description="(include 'ood') Share of validation digits whose critic is at most this one's."
    )
    nearly_empty: bool | None = Field(None, description="(include 'ood') Fewer than 10 ink pixels.")


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


DIAGNOSTICS = {  # the fields an image's answer carries when the request's `include` asks for them
    "entropy": (
        float | None,
        Field(None, description="(include 'estimates') Entropy of p(y|x), nats (ln 10: uniform)."),
    ),
    "log_px_y": (
        list[float | None] | None,
        Field(None, description="(include 'estimates') Estimate of log p(x|y) for every class y (nats)."),
    ),
    "log_px_y_std_error": (
        list[float | None] | None,
        Field(None, description="(include 'estimates') Standard error of each log p(x|y)."),
    ),
    "effective_sample_size": (
        list[float] | None,
        Field(None, description="(include 'estimates') (sum w)^2 / sum w^2 of each class's importance weights."),
    ),
    "pareto_k": (
        list[float | None] | None,
        Field(
            None,
            description="(include 'estimates') Pareto k-hat of each class's weights (Vehtari et al., 2024): above "
            "min(1 - 1/log10(K), 0.7) the estimate is unreliable. Null below 25 samples, too few to fit.",
        ),
    ),
    "num_samples_used": (
        list[int] | None,
        Field(
            None,
            description="(include 'estimates') Importance samples spent on each class (adaptive scoring spends few "
            "on classes that cannot matter; a tolerance spends more where it needs them).",
        ),
    ),
    "elbo": (Elbo | None, Field(None, description="(include 'elbo') The ELBO and its parts.")),
    "critic_probs": (
        list[float] | None,
        Field(
            None,
            description="(include 'critic') The critic's probabilities of the classes: a second opinion made by a "
            "convolutional classifier, used only to decide abstention (critic_vote). Null when the model has none.",
        ),
    ),
    "x": (
        list[float] | None,
        Field(None, description="(include 'x') The binary pixels that were scored, row-major 28x28."),
    ),
}


LOG_PX = "Estimate of log p(x) in nats, marginalized over classes (null: every weight was zero)."
LOG_PX_STD_ERROR = (
    "Standard error of log_px (delta method over the weights): the seed-to-seed spread to expect. Trust it only "
    "when log_px_reliable is true; null when it cannot be estimated."
)
LOG_PX_RELIABLE = (
    "Every class with p(y|x) >= 0.001 has weights with a light enough tail (Pareto k-hat) for log_px and its "
    "standard error to mean what they say. When false, both are likely too low: ask for more samples "
    "(num_samples, tolerance)."
)
TOLERANCE_MET = (
    "Only when a tolerance applied: log_px_std_error reached it with reliable weights within max_num_samples."
)
OOD = "Whether the image looks like the digits the model was trained on (null: the model has no calibration)."
WARNINGS = "What looks unlike an MNIST digit in this image (empty: nothing)."


class ImageScoreAnswer(BaseModel):
    log_px: float | None = Field(description=LOG_PX)
    log_px_std_error: float | None = Field(description=LOG_PX_STD_ERROR)
    log_px_reliable: bool = Field(description=LOG_PX_RELIABLE)
    tolerance_met: bool | None = Field(None, description=TOLERANCE_MET)
    bits_per_dim: float | None = Field(description="-log p(x) / (pixels x ln 2).")
    out_of_distribution: OutOfDistribution | None = Field(description=OOD)
    warnings: list[InputWarning] = Field(description=WARNINGS)


class ImageClassAnswer(BaseModel):
    predicted: int = Field(description="argmax_y p(y|x): the class (its name: class_names[predicted]).")
    probability: float = Field(description="p(predicted|x).")
    probs: list[float] = Field(description="p(y|x) for every class, by Bayes' rule.")
    abstained: bool = Field(description="True when `predicted` should not be relied on; `abstain_reasons` says why.")
    abstain_reasons: list[Literal["out_of_distribution", "low_probability", "critic_disagrees"]] = Field(
        description="out_of_distribution: the image was flagged as unlike the training digits; low_probability: "
        "p(predicted|x) is below min_probability; critic_disagrees (when critic_vote): the critic gives `predicted` "
        "a probability below min_probability (on validation digits, most of Bayes' rule's errors are among such "
        "images)."
    )
    log_px: float | None = Field(description=LOG_PX)
    log_px_std_error: float | None = Field(description=LOG_PX_STD_ERROR)
    log_px_reliable: bool = Field(description=LOG_PX_RELIABLE)
    tolerance_met: bool | None = Field(None, description=TOLERANCE_MET)
    out_of_distribution: OutOfDistribution | None = Field(description=OOD)
    warnings: list[InputWarning] = Field(description=WARNINGS)


ImageScore = create_model("ImageScore", __base__=ImageScoreAnswer, **DIAGNOSTICS)
ImageClass = create_model("ImageClass", __base__=ImageClassAnswer, **DIAGNOSTICS)


class ScoreSettings(BaseModel):
    """(include 'settings') Every setting the answer used, defaults included; the request fields of the same names
    say what each means."""

    num_samples: int = Field(description="K, the importance samples per class of the first round.")
    tolerance: float | None = Field(description="The target standard error of log p(x); null: one round.")
    max_num_samples: int = Field(description="The most samples per class that rounds could reach.")
    adaptive: bool = Field(description="Whether the classes were screened first.")
    binarize: str = Field(description="How grey pixels became binary.")
    threshold: float | None = Field(description="The cut-off of binarize='threshold'.")
    invert: bool = Field(description="Whether pixels were inverted.")
    preprocess: str = Field(description="How the images were prepared.")
    ood_fpr: float | None = Field(description="The false-positive rate of the out-of-distribution flag.")
    min_probability: float | None = Field(None, description="(classify) The probability below which it abstains.")
    critic_vote: bool | None = Field(
        None,
        description="(classify) Whether the critic's probability counted: false also when the model has no critic "
        "digit probabilities.",
    )


class Answer(BaseModel):
    model: str = Field(description="The model that answered (GET /v1/models lists them).")
    version: str = Field(description="Its version (also in the X-Model-Version header).")


SEED = "The seed the answer used: send it back to get the same answer."
SETTINGS = "(include 'settings') The settings used."


class ScoreResponse(Answer):
    seed: int = Field(description=SEED)
    settings: ScoreSettings | None = Field(None, description=SETTINGS)
    results: list[ImageScore] = Field(description="One answer per image, in the order sent.")


class ClassifyResponse(Answer):
    class_names: list[str] = Field(description="The name of each class, by index.")
    seed: int = Field(description=SEED)
    settings: ScoreSettings | None = Field(None, description=SETTINGS)
    results: list[ImageClass] = Field(description="One answer per image, in the order sent.")


class EncodeRequest(ImagesRequest):
    y: int | None = Field(None, description="Class to condition q(z|x,y) on; omit for every class.")
    seed: int | None = Field(
        None, ge=0, lt=2**63, description="Seed for binarize='bernoulli'; omit for a fresh one (the answer gives it)."
    )

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"images": [DIGIT_PNG], "y": 3}]})


class LatentPosterior(BaseModel):
    y: int = Field(description="The class q(z|x,y) is conditioned on.")
    mu: list[float] = Field(description="Mean of q(z|x,y).")
    std: list[float] = Field(description="Standard deviation of q(z|x,y), per latent dimension.")


class EncodeResponse(Answer):
    seed: int = Field(description="The seed of binarize='bernoulli'.")
    results: list[list[LatentPosterior]] = Field(
        description="Per image, q(z|x,y) for the class y asked for, or for every class when y is omitted."
    )


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
    binary: bool = Field(False, description="Also return one binary draw x ~ p(x|z,y) per image.")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"z_from": [-1.0] * 16 + [0.5] * 16, "z_to": [0.5] * 16 + [-1.0] * 16, "steps": 8, "y": 4}]
        },
    )


class Sample(BaseModel):
    y: int = Field(description="The class the image was drawn from.")
    z: list[float] = Field(description="The latent vector it was decoded from.")
    mean: list[float] = Field(description="Bernoulli means sigmoid(logits), row-major 28x28.")
    x: list[int] | None = Field(None, description="A binary draw x ~ p(x|z,y), when binary=true.")


class SampleResponse(Answer):
    seed: int = Field(description="The seed the answer used: send it back to get the same images.")
    samples: list[Sample] = Field(description="One per image drawn, in order.")


class Problem(BaseModel):
    field: str = Field(
        description="The request field at fault: body fields dotted (images[0]), query parameters "
        "by name, or path or method."
    )
    message: str = Field(description="What is wrong with it and how to fix it.")


class ErrorResponse(BaseModel):
    error: str = Field(description="What went wrong and how to fix it, in one line.")
    problems: list[Problem] = Field(default_factory=list, description="Each bad field and its fix.")


class ModelInfo(Answer):
    description: str | None = Field(None, description="What distinguishes this version, from its manifest.")
    latent_dim: int = Field(description="The size of z.")
    num_classes: int = Field(description="The number of classes y.")
    class_names: list[str] = Field(description="The name of each class, by index.")
    image_shape: list[int] = Field(description="Rows and columns of an image.")
    likelihood: dict = Field(description="p(x|z,y): its kind (bernoulli or gaussian) and parameters.")
    class_prior: list[float] = Field(description="p(y), the training class frequencies.")
    metrics: dict = Field(description="The headline test metrics (the manifest has how each was measured).")
    requested_providers: list[str] = Field(description="The execution providers asked for (CVAE_PROVIDERS).")
    active_providers: list[str] = Field(description="The execution providers ONNX Runtime really uses.")
    limits: dict = Field(description="The limits and defaults of requests (settings and the model's own).")
    manifest: dict | None = Field(None, description="(include=manifest) The whole manifest.")


class ModelVersion(BaseModel):
    model: str = Field(description="The model's name.")
    version: str = Field(description="The version.")
    state: str = Field(
        description="loading, ready (takes traffic), failed (never took traffic: see reason), unloading (finishing "
        "its requests) or unloaded"
    )
    reason: str | None = Field(None, description="why the version failed its checks or was unloaded")
    in_flight: int = Field(0, description="requests running on this version now")
    loaded_at: float | None = Field(None, description="when it became ready, seconds since the epoch")
    description: str | None = Field(None, description="what the manifest says distinguishes this version")
    metrics: dict | None = Field(None, description="test -log p(x) (nll) and accuracy from the manifest")
    default: bool = Field(False, description="requests that name no model or version get this one")
    default_model: bool = Field(False, description="this is a version of the default model")
    pinned: bool = Field(False, description="loaded by request: kept until unloaded by request")
    update: dict | None = Field(None, description="a replacement of this version that is loading or failed")


class ModelList(BaseModel):
    models: list[ModelVersion] = Field(description="Every version of every model, by model and version.")
    refused: dict[str, str] = Field(
        default_factory=dict, description="folders of the repository that are not model versions, with the reason"
    )
