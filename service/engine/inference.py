"""What each /v1 endpoint computes, from validated requests to response bodies.

Raises InputError for values the schema cannot judge alone (they depend on
the model or the limits); knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np

from service import schemas
from service.engine import answers, estimator
from service.engine.calls import ModelCalls, in_thread
from service.engine.images import ANY_SIZE, PixelBudget, decode_image, png_grid
from service.engine.pixels import binarize, emptiness_warning, parse_pixels, polarity_warning, prepare_mnist
from service.engine.scoring import Scorer, Scores, check_count
from service.failures import InputError
from service.schemas.options import ClassifyOptions, of


def _seed(given: int | None) -> int:
    """The caller's seed, or a fresh one to return so that the answer can be reproduced."""
    return given if given is not None else int(np.random.SeedSequence().entropy % 2**63)


class Inference:
    def __init__(self, scorer: Scorer):
        self.scorer = scorer
        self.model = scorer.model
        self.settings = scorer.settings
        self.calls = scorer.calls

    @classmethod
    def open(cls, model, settings, on_call=None) -> Inference:
        """What answers a loaded model's requests, its model calls started (`stop` ends them); `on_call`
        is told of each model call (service.engine.calls.ModelCalls)."""
        calls = ModelCalls(model, settings, on_call=on_call)
        calls.start()
        return cls(Scorer(model, settings, calls))

    async def stop(self) -> None:
        """Stop the model calls (their batchers) once no request uses this version any more."""
        await self.calls.stop()

    def header(self, class_names: bool = False) -> dict:
        manifest = self.model.manifest
        return answers.header(manifest["name"], manifest["version"], self.class_names() if class_names else None)

    def class_names(self) -> list[str]:
        return self.model.manifest.get("class_names") or [str(i) for i in range(self.model.num_classes)]

    # ---- inputs -------------------------------------------------------------------------
    def _shape(self) -> tuple[int, int]:
        rows, cols = self.model.manifest["image_shape"]
        return rows, cols

    def _check_class(self, y: int | None, field: str = "y") -> None:
        if y is not None and not 0 <= y < self.model.num_classes:
            raise InputError(field, f"is {y}; classes are 0 to {self.model.num_classes - 1}.")

    def images(self, request: schemas.ImagesRequest, rng: np.random.Generator) -> tuple[np.ndarray, list]:
        """The request's images as what the likelihood scores [N, 784], and per image its warnings."""
        shape = self._shape()
        if all(isinstance(item, (int, float)) and not isinstance(item, bool) for item in request.images):
            size = shape[0] * shape[1]
            raise InputError(
                "images",
                f"is a flat list of {len(request.images)} numbers, but it is a list of images: put each image in a "
                f'list of its own, {{"images": [[{size} numbers]]}}, or send 28 rows of 28 numbers per image.',
            )
        check_count(len(request.images), self.settings.max_images, "images", "max_images")
        # preprocess takes images of any size within a budget ([H, W] each); without, each is [784]
        if request.preprocess == "mnist" and not self.model.offers_mnist:
            raise InputError(
                "preprocess",
                f"is 'mnist', which makes a drawing into an MNIST digit, but {self.model.manifest['name']} was not "
                f"trained on MNIST's digits: leave it out and send {shape[1]}x{shape[0]} images as its data has them.",
            )
        budget = PixelBudget(self.settings.max_request_pixels) if request.preprocess == "mnist" else None
        any_size = ANY_SIZE if self.model.offers_mnist else ""
        pixels = [
            decode_image(item, f"images[{i}]", shape, budget, any_size)
            if isinstance(item, str)
            else parse_pixels(item, f"images[{i}]", shape, request.pixel_scale, budget, any_size)
            for i, item in enumerate(request.images)
        ]
        if request.invert:
            pixels = [1.0 - image for image in pixels]
        warnings = [[w] if (w := polarity_warning(row, shape)) else [] for row in pixels]
        if request.preprocess == "mnist":
            pixels = [prepare_mnist(row, shape) for row in pixels]
        pixels = np.stack(pixels)
        for row, found in zip(pixels, warnings):
            if not found and (w := emptiness_warning(row)):
                found.append(w)
        method = request.binarize or self.default_binarize
        if method == "none" and self.model.likelihood == "bernoulli":
            grey = np.nonzero(~np.isin(pixels, (0.0, 1.0)).all(axis=1))[0]
            if len(grey):
                raise InputError(
                    f"images[{grey[0]}]",
                    "has grey pixels, but binarize='none' and the Bernoulli likelihood needs 0/1 pixels; "
                    "use binarize='threshold' or 'bernoulli'.",
                )
        x = binarize(pixels, method, request.threshold, rng)
        if self.model.likelihood == "logistic":  # its 256 levels, k/255: a value between two is rounded
            x = np.round(x * 255.0) / np.float32(255.0)
        return x, warnings

    @property
    def default_binarize(self) -> str:
        """A request's binarize when it names none: 'threshold' for a Bernoulli model, 'none' for grey levels."""
        return "threshold" if self.model.likelihood == "bernoulli" else "none"

    def _resolved(self, request):
        """The request with its binarize filled in, as the answer's settings echo it."""
        return request.model_copy(update={"binarize": request.binarize or self.default_binarize})

    # ---- scoring ------------------------------------------------------------------------
    async def scores(self, request: schemas.ScoreRequest) -> tuple[Scores, list]:
        """The request's images scored (columns) and their warnings."""
        seed = _seed(request.seed)
        x, warnings = await asyncio.to_thread(self.images, request, estimator.binarization_stream(seed))
        options = of(ClassifyOptions, request).model_copy(update={"seed": seed})
        return await self.scorer.score(x, options), warnings

    async def score(self, request: schemas.ScoreRequest) -> dict:
        request = self._resolved(request)
        return answers.answer(self.header(), *await self.scores(request), request, classify=False)

    async def classify(self, request: schemas.ClassifyRequest) -> dict:
        request = self._resolved(request)
        return answers.answer(self.header(class_names=True), *await self.scores(request), request, classify=True)

    async def encode(self, request: schemas.EncodeRequest) -> dict:
        return await in_thread(self._encode, request)

    def _encode(self, request: schemas.EncodeRequest) -> dict:
        self._check_class(request.y)
        seed = _seed(request.seed)
        x, _ = self.images(request, estimator.binarization_stream(seed))
        classes = np.arange(self.model.num_classes) if request.y is None else np.array([request.y])
        rows_x = np.repeat(x, len(classes), axis=0)
        rows_y = np.tile(classes, len(x))
        mu, logvar = self.model.encode(rows_x, rows_y)
        std = np.exp(0.5 * logvar.astype(np.float64))
        results = [
            [
                {
                    "y": int(classes[j]),
                    "mu": mu[i * len(classes) + j].tolist(),
                    "std": std[i * len(classes) + j].tolist(),
                }
                for j in range(len(classes))
            ]
            for i in range(len(x))
        ]
        return {**self.header(), "seed": seed, "results": results}

    # ---- sampling -----------------------------------------------------------------------
    def _latents(self, z: list[list[float]], field: str) -> np.ndarray:
        d = self.model.latent_dim
        for i, row in enumerate(z):
            if len(row) != d:
                raise InputError(f"{field}[{i}]", f"has {len(row)} numbers; this model's latent vectors have {d}.")
        array = np.asarray(z, dtype=np.float64).reshape(len(z), d)
        if not np.isfinite(array).all() or np.abs(array).max(initial=0.0) > 1e4:
            raise InputError(field, "must hold finite numbers of magnitude at most 1e4.")
        return array

    async def _render(self, y: np.ndarray, z: np.ndarray, rng: np.random.Generator, binary: bool, seed: int) -> dict:
        logits = await self.calls.decode(z, y)
        mean, x = estimator.images_from_logits(logits, self.model.manifest["likelihood"], rng)
        samples = [
            {
                "y": int(y[i]),
                "z": z[i].tolist(),
                "mean": mean[i].tolist(),
                "x": x[i].tolist() if binary and x is not None else None,
            }
            for i in range(len(y))
        ]
        return {**self.header(), "seed": seed, "samples": samples}

    def sample_arrays(
        self, n: int | None, y: int | None, z: list[list[float]] | None, seed: int, fields: tuple[str, str] = ("y", "n")
    ):
        """Classes [N], latents [N, D] and the generator left after drawing them."""
        self._check_class(y, fields[0])
        if z is not None:
            if n is not None and n != len(z):
                raise InputError("n", f"is {n} but {len(z)} latent vectors were given; omit n or make them agree.")
            latents = self._latents(z, "z")
            n = len(latents)
        n = n or 1
        check_count(n, self.settings.max_samples, fields[1] if z is None else "z", "max_samples")
        rng = np.random.default_rng(seed)
        classes = np.full(n, y) if y is not None else estimator.draw_classes(self.model.log_prior, n, rng)
        if z is None:
            latents = rng.standard_normal((n, self.model.latent_dim))
        return classes, latents, rng

    async def sample(self, request: schemas.SampleRequest) -> dict:
        seed = _seed(request.seed)
        classes, latents, rng = self.sample_arrays(request.n, request.y, request.z, seed)
        return await self._render(classes, latents, rng, request.binary, seed)

    async def interpolate(self, request: schemas.InterpolateRequest) -> dict:
        self._check_class(request.y)
        check_count(request.steps, self.settings.max_samples, "steps", "max_samples")
        z_from = self._latents([request.z_from], "z_from")[0]
        z_to = self._latents([request.z_to], "z_to")[0]
        seed = _seed(request.seed)
        rng = np.random.default_rng(seed)
        y = request.y if request.y is not None else int(estimator.draw_classes(self.model.log_prior, 1, rng)[0])
        path = estimator.interpolate(z_from, z_to, request.steps, request.spherical)
        return await self._render(np.full(request.steps, y), path, rng, request.binary, seed)

    async def sample_grid_png(self, n: int, y: int | None, seed: int | None, columns: int | None) -> tuple[bytes, int]:
        """The PNG grid and the seed it was drawn with."""
        seed = _seed(seed)
        classes, latents, rng = self.sample_arrays(n, y, None, seed, fields=("y", "n"))
        logits = await self.calls.decode(latents, classes)
        mean, _ = estimator.images_from_logits(logits, self.model.manifest["likelihood"], rng)
        columns = columns or max(1, math.ceil(math.sqrt(n)))
        return await asyncio.to_thread(png_grid, mean, columns, self._shape()), seed
