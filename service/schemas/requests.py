"""Request bodies of the /v1 API: the images and the options of service.schemas.options, with the examples
/docs shows."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field, WithJsonSchema

from service.schemas.options import INCLUDE, ClassifyOptions, ImageOptions, Include, Options, ScoreOptions

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
            "description": "One image: 784 numbers, 28 rows of 28 numbers, or a base64 image file: PNG, JPEG, "
            "WebP, GIF, BMP or TIFF (28x28, read by its grey levels, or by its alpha channel where the ink is drawn "
            "on a transparent canvas; a data: URL is accepted). With preprocess 'mnist', an image file of any "
            "size or rows of any equal length (see limits.max_image_side and max_request_pixels of /v1/model). "
            "Numbers are JSON numbers (not strings or booleans) and lie in [0, 1], "
            "or are integers 0-255 (see pixel_scale). Bright pixels (1 or 255) are ink, dark ones background, "
            "as in MNIST; for dark ink on a light background send invert: true.",
            "anyOf": [
                {"type": "string", "title": "base64 image file"},
                {"type": "array", "items": {"type": "number"}, "title": "784 numbers"},
                {"type": "array", "items": {"type": "array", "items": {"type": "number"}}, "title": "rows"},
            ],
        }
    ),
]


class RequestBody(Options):
    """Every /v1 request body: an unknown field, or a number that is not finite (NaN, or 1e400 read as
    infinity), is refused naming its field."""


class Images(RequestBody):
    images: list[ImageInput] = Field(..., min_length=1, description="The images, one entry each.")


class ImagesRequest(ImageOptions, Images):  # in this order, the images come first in /docs, then the options
    pass


class ScoreRequest(ScoreOptions, ImagesRequest):
    include: list[Include] = Field(
        [],
        description="Diagnostics to add to each image's answer: "
        + "; ".join(f"'{name}': {text}" for name, text in INCLUDE.items())
        + ".",
    )

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"images": [DIGIT_PNG], "num_samples": 1000, "tolerance": 0.3, "seed": 0}]},
    )


class ClassifyRequest(ClassifyOptions, ScoreRequest):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"images": [DIGIT_PNG], "min_probability": 0.9, "seed": 0}]},
    )


class EncodeRequest(ImagesRequest):
    y: int | None = Field(None, description="Class to condition q(z|x,y) on; omit for every class.")
    seed: int | None = Field(
        None, ge=0, lt=2**63, description="Seed for binarize='bernoulli'; omit for a fresh one (the answer gives it)."
    )

    model_config = ConfigDict(json_schema_extra={"examples": [{"images": [DIGIT_PNG], "y": 3}]})


class SampleRequest(RequestBody):
    n: int | None = Field(None, ge=1, description="How many images (default 1; with z given, one per z).")
    y: int | None = Field(None, description="Class of every image; omit to draw y ~ p(y).")
    z: list[list[float]] | None = Field(
        None, min_length=1, description="Latent vectors, one image each; omit to draw z ~ N(0, I)."
    )
    seed: int | None = Field(
        None, ge=0, lt=2**63, description="Makes the answer reproducible; omit for fresh draws (the answer gives it)."
    )
    binary: bool = Field(
        False, description="Also return one draw x ~ p(x|z,y) per image (binary for a Bernoulli model)."
    )

    model_config = ConfigDict(json_schema_extra={"examples": [{"n": 4, "y": 7, "seed": 1}]})


class InterpolateRequest(RequestBody):
    z_from: list[float] = Field(..., description="Start point in latent space.")
    z_to: list[float] = Field(..., description="End point in latent space.")
    steps: int = Field(8, ge=2, description="Images along the path, both ends included.")
    y: int | None = Field(None, description="Class of every image; omit to draw one class for the whole path.")
    spherical: bool = Field(True, description="Slerp (keeps latent norms typical of N(0, I)) rather than a line.")
    seed: int | None = Field(
        None, ge=0, lt=2**63, description="Seed of the class draw and binary draws; omit for fresh ones."
    )
    binary: bool = Field(
        False, description="Also return one draw x ~ p(x|z,y) per image (binary for a Bernoulli model)."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"z_from": [-1.0] * 16 + [0.5] * 16, "z_to": [0.5] * 16 + [-1.0] * 16, "steps": 8, "y": 4}]
        },
    )
