"""Request and response bodies of the /v1 API, with the examples /docs shows."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

_ZERO_IMAGE = [0.0] * 784

ImageInput = Annotated[
    Any,
    WithJsonSchema(
        {
            "description": "One image: 784 numbers, 28 rows of 28 numbers, or a base64 PNG (28x28, greyscale "
            "or with ink in the alpha channel; a data: URL is accepted). Numbers lie in [0, 1], "
            "or are integers 0-255 (see pixel_scale).",
            "anyOf": [
                {"type": "string", "title": "base64 PNG"},
                {"type": "array", "items": {"type": "number"}, "title": "784 numbers"},
                {"type": "array", "items": {"type": "array", "items": {"type": "number"}}, "title": "28x28 rows"},
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


class Binarization(BaseModel):
    method: str
    threshold: float | None = None


class ScoreRequest(ImagesRequest):
    num_samples: int | None = Field(
        None,
        ge=2,
        description="Importance samples K per image and class, at least 2 so that a standard error exists "
        "(default and maximum: see GET /v1/model).",
    )
    seed: int = Field(
        0, ge=0, lt=2**63, description="Seed of the importance-sampling noise (and of binarize='bernoulli')."
    )
    adaptive: bool = Field(
        True,
        description="Screen every class with a few samples, then spend all num_samples only on the classes "
        "within the margin of the best (see GET /v1/model); false spends num_samples on every class.",
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"images": [_ZERO_IMAGE], "num_samples": 500, "seed": 0}]},
    )


class Elbo(BaseModel):
    value: float = Field(description="ELBO of log p(x) with q(y|x) = p(y|x): reconstruction - kl_z - kl_y (nats).")
    reconstruction: float = Field(description="sum_y q(y|x) E_q(z|x,y)[log p(x|z,y)] (nats).")
    kl_z: float = Field(description="sum_y q(y|x) KL(q(z|x,y) || p(z)) in closed form (nats).")
    kl_y: float = Field(description="KL(q(y|x) || p(y)) (nats).")


class ImageScore(BaseModel):
    log_px: float = Field(description="Estimate of log p(x) in nats, marginalized over classes.")
    log_px_std_error: float = Field(description="Standard error of log_px (delta method over the weights).")
    bits_per_dim: float = Field(description="-log p(x) / (pixels x ln 2).")
    log_px_y: list[float] = Field(description="Estimate of log p(x|y) for every class y (nats).")
    log_px_y_std_error: list[float]
    effective_sample_size: list[float] = Field(description="(sum w)^2 / sum w^2 of the K weights, per class.")
    num_samples_used: list[int] = Field(
        description="Importance samples spent on each class (adaptive: fewer on classes that cannot matter)."
    )
    elbo: Elbo


class ScoreResponse(BaseModel):
    num_samples: int
    adaptive: bool
    seed: int
    binarization: Binarization
    results: list[ImageScore]


class ImageClass(BaseModel):
    probs: list[float] = Field(description="p(y|x) for every class, by Bayes' rule.")
    predicted: int = Field(description="argmax_y p(y|x).")
    probability: float = Field(description="p(predicted|x).")
    entropy: float = Field(description="Entropy of p(y|x) in nats (0: certain; ln 10: uniform).")
    log_px: float


class ClassifyResponse(BaseModel):
    num_samples: int
    adaptive: bool
    seed: int
    binarization: Binarization
    results: list[ImageClass]


class EncodeRequest(ImagesRequest):
    y: int | None = Field(None, description="Class to condition q(z|x,y) on; omit for every class.")
    seed: int = Field(0, ge=0, lt=2**63, description="Seed for binarize='bernoulli'.")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"images": [_ZERO_IMAGE], "y": 3}]})


class Posterior(BaseModel):
    y: int
    mu: list[float]
    std: list[float]


class EncodeResponse(BaseModel):
    binarization: Binarization
    results: list[list[Posterior]] = Field(description="Per image, q(z|x,y) for each class asked for.")


class SampleRequest(BaseModel):
    n: int | None = Field(None, ge=1, description="How many images (default 1; with z given, one per z).")
    y: int | None = Field(None, description="Class of every image; omit to draw y ~ p(y).")
    z: list[list[float]] | None = Field(
        None, min_length=1, description="Latent vectors, one image each; omit to draw z ~ N(0, I)."
    )
    seed: int | None = Field(None, ge=0, lt=2**63, description="Makes the answer reproducible; omit for fresh draws.")
    binary: bool = Field(False, description="Also return one binary draw x ~ p(x|z,y) per image.")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"n": 4, "y": 7, "seed": 1}]})


class InterpolateRequest(BaseModel):
    z_from: list[float] = Field(..., description="Start point in latent space.")
    z_to: list[float] = Field(..., description="End point in latent space.")
    steps: int = Field(8, ge=2, description="Images along the path, both ends included.")
    y: int | None = Field(None, description="Class of every image; omit to draw one class for the whole path.")
    spherical: bool = Field(True, description="Slerp (keeps latent norms typical of N(0, I)) rather than a line.")
    seed: int | None = Field(None, ge=0, lt=2**63)
    binary: bool = False

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"z_from": [-1.0] * 32, "z_to": [1.0] * 32, "steps": 8, "y": 4}]},
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
