"""Requests built and answers parsed once; Client and AsyncClient differ only in how they wait."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from typing_extensions import Unpack

import httpx
import numpy as np


class ApiError(Exception):
    """An answer other than 200: `status`, the service's `message` and its per-field `problems`."""

    def __init__(self, status: int, message: str, problems: list[dict] | None = None):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.problems = problems or []


class ClientError(ApiError):
    """4xx: the request must change (the message names the field and the fix)."""


class ServerError(ApiError):
    """5xx, or 503 still after every retry."""


class ScoringOptions(TypedDict, total=False):
    """The optional fields of a scoring request (see /docs): omitted ones take the service's defaults."""

    num_samples: int
    tolerance: float
    max_num_samples: int
    seed: int
    adaptive: bool
    binarize: str
    threshold: float
    pixel_scale: str
    invert: bool
    preprocess: str
    ood_fpr: float
    include: list[str]  # diagnostics: estimates, elbo, ood, critic, x, settings
    min_probability: float  # classify only
    critic_vote: bool  # classify only


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


def _images(images, shape: Shape) -> list:
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


def _samples(body: dict, shape: Shape) -> Samples:
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


def _scores(body: dict, shape: Shape) -> Scores:
    return Scores(**_common(body, shape))


def _classes(body: dict, shape: Shape) -> Classes:
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


def _posteriors(body: dict) -> Posteriors:
    r = body["results"]
    return Posteriors(
        y=np.asarray([p["y"] for p in r[0]]),
        mu=np.asarray([[p["mu"] for p in image] for image in r]),
        std=np.asarray([[p["std"] for p in image] for image in r]),
    )


def _drop_none(payload: dict) -> dict:
    return {key: value for key, value in payload.items() if value is not None}


class _Calls:
    """Each call as (method, path, JSON body, parser), for a model whose images have `shape`."""

    def __init__(self, shape: Shape):
        self.shape = shape

    def sample(self, n=None, y=None, z=None, seed=None, binary=False):
        z = None if z is None else np.asarray(z, dtype=np.float64).reshape(-1, np.shape(z)[-1]).tolist()
        payload = _drop_none({"n": n, "y": y, "z": z, "seed": seed, "binary": binary})
        return "POST", "/v1/samples", payload, partial(_samples, shape=self.shape)

    def interpolate(self, z_from, z_to, steps=8, y=None, spherical=True, seed=None):
        payload = {
            "z_from": np.asarray(z_from, dtype=np.float64).tolist(),
            "z_to": np.asarray(z_to, dtype=np.float64).tolist(),
            "steps": steps,
            "y": y,
            "spherical": spherical,
            "seed": seed,
        }
        return "POST", "/v1/interpolations", _drop_none(payload), partial(_samples, shape=self.shape)

    def encode(self, images, y=None, binarize="threshold"):
        payload = _drop_none({"images": _images(images, self.shape), "y": y, "binarize": binarize})
        return "POST", "/v1/encode", payload, _posteriors

    def log_likelihood(self, images, **options):
        payload = _drop_none({"images": _images(images, self.shape), **options})
        return "POST", "/v1/log-likelihood", payload, partial(_scores, shape=self.shape)

    def classify(self, images, **options):
        payload = _drop_none({"images": _images(images, self.shape), **options})
        return "POST", "/v1/classify", payload, partial(_classes, shape=self.shape)


MODEL = ("GET", "/v1/model", None, lambda body: body)
MODELS = ("GET", "/v1/models", None, lambda body: body["models"])


def _error(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
        message, problems = body.get("error", response.text), body.get("problems", [])
    except ValueError:
        message, problems = response.text, []
    kind = ClientError if response.status_code < 500 else ServerError
    return kind(response.status_code, message, problems)


def _answer(response: httpx.Response, parse):
    """The parsed body of a 200 answer; any other status raises its ClientError or ServerError."""
    if response.status_code != 200:
        raise _error(response)
    return parse(response.json())


def _retry_delay(response: httpx.Response, attempt: int, cap: float) -> float:
    header = response.headers.get("retry-after", "")
    delay = float(header) if header.replace(".", "", 1).isdigit() else 0.5 * 2**attempt
    return min(delay, cap)


class _Base:
    """Settings and the httpx client (`_http_class`, sync or async) shared by Client and AsyncClient."""

    _http_class: type

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        max_retry_wait: float = 30.0,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
        model: str | None = None,
        version: str | None = None,
    ):
        """`model` and `version` pin every call to one model version (default: the service's default
        model, newest ready version, which may change when a new version is swapped in)."""
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.max_retry_wait = max_retry_wait
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        pinned = _drop_none({"model": model, "version": version})
        self.http = self._http_class(
            base_url=self.base_url, timeout=timeout, headers=headers, transport=transport, params=pinned
        )
        self._calls: _Calls | None = None  # made from /v1/model on first use


class Client(_Base):
    """Blocking client. Retries 503 answers (honouring Retry-After) up to `retries` times."""

    _http_class = httpx.Client

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, payload: Any, parse):
        for attempt in range(self.retries + 1):
            response = self.http.request(method, path, json=payload)
            if response.status_code != 503 or attempt == self.retries:
                break
            time.sleep(_retry_delay(response, attempt, self.max_retry_wait))
        return _answer(response, parse)

    def _model_calls(self) -> _Calls:
        if self._calls is None:
            self._calls = _Calls(Shape.of(self.model()))
        return self._calls

    def sample(
        self, n: int | None = None, y: int | None = None, z=None, seed: int | None = None, binary: bool = False
    ) -> Samples:
        return self._call(*self._model_calls().sample(n, y, z, seed, binary))

    def interpolate(
        self, z_from, z_to, steps: int = 8, y: int | None = None, spherical: bool = True, seed: int | None = None
    ) -> Samples:
        return self._call(*self._model_calls().interpolate(z_from, z_to, steps, y, spherical, seed))

    def encode(self, images, y: int | None = None, binarize: str = "threshold") -> Posteriors:
        return self._call(*self._model_calls().encode(images, y, binarize))

    def log_likelihood(self, images, **options: Unpack[ScoringOptions]) -> Scores:
        """log p(x) and its parts; options as the request's fields (num_samples, tolerance, ...)."""
        return self._call(*self._model_calls().log_likelihood(images, **options))

    def classify(self, images, **options: Unpack[ScoringOptions]) -> Classes:
        """p(y|x) by Bayes' rule; options as for log_likelihood."""
        return self._call(*self._model_calls().classify(images, **options))

    def model(self) -> dict:
        """GET /v1/model: sizes, classes, metrics, limits."""
        return self._call(*MODEL)

    def models(self) -> list[dict]:
        """GET /v1/models: every model version the service holds, with its state."""
        return self._call(*MODELS)


class AsyncClient(_Base):
    """The same calls, awaitable."""

    _http_class = httpx.AsyncClient

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    async def _call(self, method: str, path: str, payload: Any, parse):
        for attempt in range(self.retries + 1):
            response = await self.http.request(method, path, json=payload)
            if response.status_code != 503 or attempt == self.retries:
                break
            await asyncio.sleep(_retry_delay(response, attempt, self.max_retry_wait))
        return _answer(response, parse)

    async def _model_calls(self) -> _Calls:
        if self._calls is None:
            self._calls = _Calls(Shape.of(await self.model()))
        return self._calls

    async def sample(
        self, n: int | None = None, y: int | None = None, z=None, seed: int | None = None, binary: bool = False
    ) -> Samples:
        return await self._call(*(await self._model_calls()).sample(n, y, z, seed, binary))

    async def interpolate(
        self, z_from, z_to, steps: int = 8, y: int | None = None, spherical: bool = True, seed: int | None = None
    ) -> Samples:
        return await self._call(*(await self._model_calls()).interpolate(z_from, z_to, steps, y, spherical, seed))

    async def encode(self, images, y: int | None = None, binarize: str = "threshold") -> Posteriors:
        return await self._call(*(await self._model_calls()).encode(images, y, binarize))

    async def log_likelihood(self, images, **options: Unpack[ScoringOptions]) -> Scores:
        return await self._call(*(await self._model_calls()).log_likelihood(images, **options))

    async def classify(self, images, **options: Unpack[ScoringOptions]) -> Classes:
        return await self._call(*(await self._model_calls()).classify(images, **options))

    async def model(self) -> dict:
        return await self._call(*MODEL)

    async def models(self) -> list[dict]:
        return await self._call(*MODELS)
