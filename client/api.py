"""Requests built and answers parsed once; Client and AsyncClient differ only in how they wait."""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from typing_extensions import Unpack

import httpx
import numpy as np

from client.answers import (
    Classes,
    LogLikelihoods,
    Posteriors,
    Samples,
    Shape,
    columns_of,
    flat_images,
    posteriors_of,
    samples_of,
)
from service.schemas.options import ClassifyOptions, ImageOptions, Include


class ApiError(Exception):
    """An answer other than 200: `status`, the service's `message` and its per-field `problems`."""

    def __init__(self, status: int, message: str, problems: list[dict] | None = None):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.problems = problems or []


RETRIED = (429, 503)  # past a caller's share or rate, or a full service: both say when to retry


class ClientError(ApiError):
    """4xx: the request must change (the message names the field and the fix)."""


class ServerError(ApiError):
    """5xx, or 503 still after every retry (a 429 still after them is a ClientError)."""


# The optional fields of a scoring request, as the service declares them (service.schemas.options): omitted ones take
# the service's defaults; min_probability and critic_vote are classify's.
ScoringOptions = TypedDict(
    "ScoringOptions",
    {name: option.annotation for name, option in (ImageOptions.model_fields | ClassifyOptions.model_fields).items()}
    | {"include": list[Include]},
    total=False,
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
        return "POST", "/v1/samples", payload, partial(samples_of, shape=self.shape)

    def interpolate(self, z_from, z_to, steps=8, y=None, spherical=True, seed=None):
        payload = {
            "z_from": np.asarray(z_from, dtype=np.float64).tolist(),
            "z_to": np.asarray(z_to, dtype=np.float64).tolist(),
            "steps": steps,
            "y": y,
            "spherical": spherical,
            "seed": seed,
        }
        return "POST", "/v1/interpolations", _drop_none(payload), partial(samples_of, shape=self.shape)

    def encode(self, images, y=None, binarize="threshold"):
        payload = _drop_none({"images": flat_images(images, self.shape), "y": y, "binarize": binarize})
        return "POST", "/v1/encode", payload, posteriors_of

    def log_likelihood(self, images, **options):
        payload = _drop_none({"images": flat_images(images, self.shape), **options})
        return "POST", "/v1/log-likelihood", payload, partial(columns_of, shape=self.shape, answer=LogLikelihoods)

    def classify(self, images, **options):
        payload = _drop_none({"images": flat_images(images, self.shape), **options})
        return "POST", "/v1/classify", payload, partial(columns_of, shape=self.shape, answer=Classes)


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
    """Blocking client. Retries 503 and 429 answers (honouring Retry-After) up to `retries` times."""

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
            if response.status_code not in RETRIED or attempt == self.retries:
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

    def log_likelihood(self, images, **options: Unpack[ScoringOptions]) -> LogLikelihoods:
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
            if response.status_code not in RETRIED or attempt == self.retries:
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

    async def log_likelihood(self, images, **options: Unpack[ScoringOptions]) -> LogLikelihoods:
        return await self._call(*(await self._model_calls()).log_likelihood(images, **options))

    async def classify(self, images, **options: Unpack[ScoringOptions]) -> Classes:
        return await self._call(*(await self._model_calls()).classify(images, **options))

    async def model(self) -> dict:
        return await self._call(*MODEL)

    async def models(self) -> list[dict]:
        return await self._call(*MODELS)
