"""Answer bodies of the /v1 API: every field's meaning is written here once (docs/answers.md is made from it)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, create_model

from service.schemas.options import ECHOED, ClassifyOptions, ImageOptions


class InputWarning(BaseModel):
    code: Literal["reversed_polarity", "nearly_empty"] = Field(
        description="reversed_polarity: the border is mostly bright (send invert: true for dark ink on light); "
        "nearly_empty: fewer than 10 ink pixels."
    )
    message: str = Field(description="What looks wrong with the image and what to do.")


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
        "anything else; null for a model without a critic (a model of grey levels).",
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
        None,
        description="(include 'ood') Share of validation digits whose critic is at most this one's; null without "
        "a critic.",
    )
    nearly_empty: bool | None = Field(
        None, description="(include 'ood') Under 10 ink pixels, flagged; always false for a grey-level model."
    )


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
        Field(
            None, description="(include 'x') The binary pixels that were scored, row-major in the model's image_shape."
        ),
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


def _echo(name: str) -> tuple:
    """A field of the settings echo: the option's type and meaning (service.schemas.options)."""
    option = (ImageOptions.model_fields | ClassifyOptions.model_fields)[name]
    return option.annotation | None, Field(None, description=option.description)


ScoreSettings = create_model(
    "ScoreSettings",
    __doc__="(include 'settings') Every option the answer used, defaults filled in (min_probability and "
    "critic_vote on /v1/classify; critic_vote false also when the model's critic gives no class probabilities).",
    **{name: _echo(name) for name in ECHOED},
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


class LatentPosterior(BaseModel):
    y: int = Field(description="The class q(z|x,y) is conditioned on.")
    mu: list[float] = Field(description="Mean of q(z|x,y).")
    std: list[float] = Field(description="Standard deviation of q(z|x,y), per latent dimension.")


class EncodeResponse(Answer):
    seed: int = Field(description="The seed of binarize='bernoulli'.")
    results: list[list[LatentPosterior]] = Field(
        description="Per image, q(z|x,y) for the class y asked for, or for every class when y is omitted."
    )


class Sample(BaseModel):
    y: int = Field(description="The class the image was drawn from.")
    z: list[float] = Field(description="The latent vector it was decoded from.")
    mean: list[float] = Field(
        description="Means sigmoid(logits) of p(x|z,y), in [0, 1], row-major in the model's image_shape (for a model "
        "of grey levels, each pixel's logistic's location)."
    )
    x: list[int] | None = Field(
        None, description="A draw x ~ p(x|z,y), when binary=true: 0 or 1 for a Bernoulli model, 0-255 for grey levels."
    )


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
    default_rule: str = Field(
        description="which version a request naming none gets, and what becomes the default when a version arrives"
    )
