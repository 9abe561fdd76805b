"""The service's answers as numpy columns: what the client returns, parsed from the JSON once."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
class Scores:
    """/v1/log-likelihood's answer as columns. The diagnostics are None unless `include` asked for them."""

    model: str  # the model and version that answered
    version: str
    seed: int  # the seed the service used: send it again to reproduce the answer
    log_px: np.ndarray  # [N] nats (NaN where the service sent null)
    log_px_std_error: np.ndarray  # [N]
    log_px_reliable: np.ndarray  # [N] bool: Pareto k-hat allows trusting log_px and its error
    tolerance_met: np.ndarray | None  # [N] bool, when a tolerance applied
    out_of_distribution: np.ndarray  # [N] bool: flagged as unlike the training digits
    ood_p_value: np.ndarray  # [N] chance that a real digit looks at least this unusual (NaN: no calibration)
    warnings: list[list[dict]]  # per image: {code, message} of what looks unlike an MNIST digit
    bits_per_dim: np.ndarray | None = None  # [N]
    entropy: np.ndarray | None = None  # [N] nats (include "estimates")
    log_px_y: np.ndarray | None = None  # [N, C] (include "estimates")
    log_px_y_std_error: np.ndarray | None = None  # [N, C]
    effective_sample_size: np.ndarray | None = None  # [N, C]
    pareto_k: np.ndarray | None = None  # [N, C]
    num_samples_used: np.ndarray | None = None  # [N, C]
    elbo: np.ndarray | None = None  # [N] (include "elbo")
    critic_probs: np.ndarray | None = None  # [N, C] the critic's second opinion (include "critic")
    x: np.ndarray | None = None  # [N, H, W] the pixels scored (include "x")


@dataclass
class Classes(Scores):
    """/v1/classify's answer as columns."""

    probs: np.ndarray | None = None  # [N, C] p(y|x)
    predicted: np.ndarray | None = None  # [N]
    predicted_names: list[str] | None = None  # [N] the model's name of each predicted class
    probability: np.ndarray | None = None  # [N] p(predicted|x)
    abstained: np.ndarray | None = None  # [N] bool: do not rely on `predicted`
    abstain_reasons: list[list[str]] | None = None  # per image: out_of_distribution, low_probability, critic_disagrees


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


def _floats(values) -> np.ndarray:
    """Numbers as float64, the service's null (a number it could not estimate) as NaN."""
    return np.asarray(values, dtype=object).astype(float)


def _column(results: list[dict], key: str, kind=None):
    """One field of every image's answer as an array, None when the answers do not carry it."""
    if not results or key not in results[0] or any(r.get(key) is None for r in results):
        return None
    return _floats([r[key] for r in results]) if kind is None else np.asarray([r[key] for r in results], dtype=kind)


def _common(body: dict, shape: Shape) -> dict:
    """The fields /v1/log-likelihood and /v1/classify share, as columns."""
    r = body["results"]
    verdicts = [i["out_of_distribution"] or {} for i in r]
    x = _column(r, "x")
    return {
        "model": body["model"],
        "version": body["version"],
        "seed": body["seed"],
        "log_px": _floats([i["log_px"] for i in r]),
        "log_px_std_error": _floats([i["log_px_std_error"] for i in r]),
        "log_px_reliable": np.asarray([i["log_px_reliable"] for i in r]),
        "tolerance_met": _column(r, "tolerance_met", bool),
        "out_of_distribution": np.asarray([v.get("flagged", False) for v in verdicts]),
        "ood_p_value": _floats([v.get("p_value") for v in verdicts]),
        "warnings": [i["warnings"] for i in r],
        "bits_per_dim": _column(r, "bits_per_dim"),
        "entropy": _column(r, "entropy"),
        "log_px_y": _column(r, "log_px_y"),
        "log_px_y_std_error": _column(r, "log_px_y_std_error"),
        "effective_sample_size": _column(r, "effective_sample_size"),
        "pareto_k": _column(r, "pareto_k"),
        "num_samples_used": _column(r, "num_samples_used", np.int64),
        "elbo": _floats([i["elbo"]["value"] for i in r]) if r and "elbo" in r[0] else None,
        "critic_probs": _column(r, "critic_probs"),
        "x": None if x is None else x.reshape(-1, *shape.image_shape),
    }


def scores_of(body: dict, shape: Shape) -> Scores:
    return Scores(**_common(body, shape))


def classes_of(body: dict, shape: Shape) -> Classes:
    r = body["results"]
    names = body.get("class_names") or shape.class_names
    return Classes(
        **_common(body, shape),
        probs=np.asarray([i["probs"] for i in r]),
        predicted=np.asarray([i["predicted"] for i in r]),
        predicted_names=[names[i["predicted"]] for i in r],
        probability=np.asarray([i["probability"] for i in r]),
        abstained=np.asarray([i["abstained"] for i in r]),
        abstain_reasons=[i["abstain_reasons"] for i in r],
    )


def posteriors_of(body: dict) -> Posteriors:
    r = body["results"]
    return Posteriors(
        y=np.asarray([p["y"] for p in r[0]]),
        mu=np.asarray([[p["mu"] for p in image] for image in r]),
        std=np.asarray([[p["std"] for p in image] for image in r]),
    )
