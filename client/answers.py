"""The service's answers as numpy columns: what the client returns, parsed from the JSON once."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from service.schemas.responses import ImageClass, ImageScore
from service.schemas.rows import columns, flatten, optional


@dataclass(frozen=True)
class Shape:
    """What the served model's images look like, read from /v1/model."""

    image_shape: tuple[int, int]
    class_names: list[str]

    @classmethod
    def of(cls, model: dict) -> Shape:
        return cls(tuple(model["image_shape"]), list(model["class_names"]))


@dataclass
class Samples:
    mean: np.ndarray  # [N, H, W] Bernoulli means (H x W: the model's image_shape)
    x: np.ndarray | None  # [N, H, W] binary draws, when asked for
    y: np.ndarray  # [N] classes
    z: np.ndarray  # [N, D] latents
    seed: int


@dataclass
class Columns:
    """An answer of /v1/log-likelihood or /v1/classify as columns, one per field of an image's answer,
    by the names the service publishes (service.schemas.rows: `log_px`, `out_of_distribution_flagged`,
    `elbo_value`, ...; docs/answers.md says what each means): numbers as arrays [N] or [N, C] (the
    service's null as NaN), flags as bool arrays, classes and counts as int arrays, reasons and warning
    codes as lists per image, the pixels scored as [N, H, W]. A field the answer does not carry (a
    diagnostic `include` did not ask for) is None; `body` is the answer as sent."""

    FIELDS: ClassVar[dict[str, Any]] = columns(ImageScore)

    model: str  # the model and version that answered
    version: str
    seed: int  # the seed the service used: send it again to reproduce the answer
    body: dict = field(repr=False)
    columns: dict[str, Any] = field(repr=False)

    def __getattr__(self, name: str):
        if name in type(self).FIELDS:
            return self.columns.get(name)
        raise AttributeError(f"{type(self).__name__} has no field {name!r}; its fields: {sorted(type(self).FIELDS)}")


class LogLikelihoods(Columns):
    """/v1/log-likelihood's answer as columns."""


class Classes(Columns):
    """/v1/classify's answer as columns, and `predicted_names`: the model's name of each predicted class."""

    FIELDS: ClassVar[dict[str, Any]] = columns(ImageClass) | {"predicted_names": list[str]}


@dataclass
class Posteriors:
    y: np.ndarray  # [C'] classes asked for
    mu: np.ndarray  # [N, C', D]
    std: np.ndarray  # [N, C', D]


def flat_images(images, shape: Shape) -> list:
    """One image ([H, W] or [H * W]) or many ([N, H, W] or [N, H * W]) as a list of flat images."""
    rows, cols = shape.image_shape
    array = np.asarray(images, dtype=np.float64)
    if array.shape in ((rows, cols), (rows * cols,)):
        array = array[None]
    if array.ndim < 2 or array[0].size != rows * cols:
        raise ValueError(
            f"images of shape {list(array.shape)} do not hold {rows}x{cols} images: "
            f"send [N, {rows}, {cols}], [N, {rows * cols}], or one image"
        )
    return array.reshape(len(array), -1).tolist()


def samples_of(body: dict, shape: Shape) -> Samples:
    s = body["samples"]
    x = [item["x"] for item in s]
    return Samples(
        mean=np.asarray([item["mean"] for item in s]).reshape(-1, *shape.image_shape),
        x=None if any(v is None for v in x) else np.asarray(x, dtype=np.uint8).reshape(-1, *shape.image_shape),
        y=np.asarray([item["y"] for item in s]),
        z=np.asarray([item["z"] for item in s]),
        seed=body["seed"],
    )


def _column(values: list, kind):
    """One field of every image's answer as Columns holds it."""
    item = optional(typing.get_args(kind)[0]) if typing.get_origin(kind) is list else kind
    if item is float or (item is int and any(v is None for v in values)):
        return np.asarray(values, dtype=object).astype(float)  # the service's null as NaN
    if item in (int, bool):
        return np.asarray(values, dtype=np.int64 if item is int else bool)
    return values  # names and codes: a list per image


def columns_of(body: dict, shape: Shape, answer: type[Columns]) -> Columns:
    """/v1/log-likelihood's or /v1/classify's answer (`answer`: LogLikelihoods or Classes) as columns."""
    rows = [flatten(result) for result in body["results"]]
    found = {
        name: _column([row.get(name) for row in rows], kind)
        for name, kind in answer.FIELDS.items()
        if any(name in row for row in rows)
    }
    if "x" in found:
        found["x"] = found["x"].reshape(-1, *shape.image_shape)
    if "predicted" in found:
        names = body.get("class_names") or shape.class_names
        found["predicted_names"] = [names[i] for i in found["predicted"]]
    return answer(body["model"], body["version"], body["seed"], body, found)


def posteriors_of(body: dict) -> Posteriors:
    r = body["results"]
    return Posteriors(
        y=np.asarray([p["y"] for p in r[0]]),
        mu=np.asarray([[p["mu"] for p in image] for image in r]),
        std=np.asarray([[p["std"] for p in image] for image in r]),
    )
