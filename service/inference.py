"""What each endpoint computes, from validated requests to response bodies.

Raises InputError for values the schema cannot judge alone (they depend on
the model or the limits); knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import math
from typing import NamedTuple

import numpy as np

from service import abstention, estimator, ood, rounds, schemas
from service.calls import ModelCalls
from service.images import (
    InputError,
    PixelBudget,
    binarize,
    decode_png,
    emptiness_warning,
    parse_pixels,
    png_grid,
    polarity_warning,
    prepare_mnist,
)
from service.runtime import Model
from service.settings import Settings


def _finite(value: float) -> float | None:
    """A float for JSON, None where it is not finite (JSON has no inf or NaN)."""
    return float(value) if math.isfinite(value) else None


def _finite_list(values: np.ndarray) -> list[float | None]:
    return [_finite(v) for v in values.tolist()]


def _seed(given: int | None) -> int:
    """The caller's seed, or a fresh one to return so that the answer can be reproduced."""
    return given if given is not None else int(np.random.SeedSequence().entropy % 2**63)


class Scored(NamedTuple):
    """What /v1/log-likelihood and /v1/classify answer from, per request."""

    estimates: rounds.Estimates
    posterior: estimator.Posterior
    echo: dict  # the settings the answer used
    warnings: list[list[dict]]  # per image
    verdicts: list[dict | None]  # per image, the out-of-distribution assessment
    x: np.ndarray  # [N, 784] what was scored
    critic_probs: np.ndarray | None  # [N, 10] the critic's probabilities of the digits; None without them


class Inference:
    def __init__(self, model: Model, settings: Settings, calls: ModelCalls):
        self.model = model
        self.settings = settings
        self.calls = calls
        self.screening = rounds.screening_for(
            model.manifest, settings.adaptive_screen_samples, settings.adaptive_margin
        )

    # ---- inputs -------------------------------------------------------------------------
    def _shape(self) -> tuple[int, int]:
        rows, cols = self.model.manifest["image_shape"]
        return rows, cols

    def _check_class(self, y: int | None, field: str = "y") -> None:
        if y is not None and not 0 <= y < self.model.num_classes:
            raise InputError(field, f"is {y}; classes are 0 to {self.model.num_classes - 1}.")

    def _check_count(self, count: int, limit: int, field: str, setting: str) -> None:
        if count > limit:
            raise InputError(field, f"asks for {count}; the limit is {limit} (setting CVAE_{setting.upper()}).")

    def images(self, request: schemas.ImagesRequest, rng: np.random.Generator) -> tuple[np.ndarray, dict, list]:
        """The request's images as what the likelihood scores [N, 784], the echo of how they were
        prepared and binarized, and per image its warnings."""
        shape = self._shape()
        if all(isinstance(item, (int, float)) and not isinstance(item, bool) for item in request.images):
            size = shape[0] * shape[1]
            raise InputError(
                "images",
                f"is a flat list of {len(request.images)} numbers, but it is a list of images: put each image in a "
                f'list of its own, {{"images": [[{size} numbers]]}}, or send 28 rows of 28 numbers per image.',
            )
        self._check_count(len(request.images), self.settings.max_images, "images", "max_images")
        # preprocess takes images of any size within a budget ([H, W] each); without, each is [784]
        s = self.settings
        budget = PixelBudget(s.max_image_side, s.max_request_pixels) if request.preprocess == "mnist" else None
        pixels = [
            decode_png(item, f"images[{i}]", shape, budget)
            if isinstance(item, str)
            else parse_pixels(item, f"images[{i}]", shape, request.pixel_scale, budget)
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
        method = request.binarize
        if method == "none" and self.model.likelihood == "bernoulli":
            grey = np.nonzero(~np.isin(pixels, (0.0, 1.0)).all(axis=1))[0]
            if len(grey):
                raise InputError(
                    f"images[{grey[0]}]",
                    "has grey pixels, but binarize='none' and the Bernoulli likelihood needs 0/1 pixels; "
                    "use binarize='threshold' or 'bernoulli'.",
                )
        used = {
            "binarization": {"method": method, "threshold": request.threshold if method == "threshold" else None},
            "preparation": {"invert": request.invert, "preprocess": request.preprocess},
        }
        return binarize(pixels, method, request.threshold, rng), used, warnings

    def _num_samples(self, requested: int | None, num_images: int) -> int:
        k = requested or min(self.settings.default_num_samples, self.settings.max_num_samples)
        self._check_count(k, self.settings.max_num_samples, "num_samples", "max_num_samples")
        work = num_images * self.model.num_classes * k
        if work > self.settings.max_work:
            raise InputError(
                "num_samples",
                f"{num_images} images x {self.model.num_classes} classes x {k} samples = {work} decoder passes "
                f"exceeds the per-request limit {self.settings.max_work} (setting CVAE_MAX_WORK); "
                "send fewer images per request or a smaller num_samples.",
            )
        return k

    # ---- scoring ------------------------------------------------------------------------
    def _precision(self, request: schemas.ScoreRequest, k: int) -> rounds.Precision | None:
        """The rounds a request asks for (or the default tolerance), None for a single round."""
        budget = request.max_num_samples or self.settings.max_num_samples
        self._check_count(budget, self.settings.max_num_samples, "max_num_samples", "max_num_samples")
        if budget < k:
            raise InputError("max_num_samples", f"is {budget}, below num_samples {k}; raise it or omit it.")
        tolerance = request.tolerance or self.settings.default_tolerance or None
        if tolerance is None or budget == k:
            return None
        return rounds.Precision(tolerance, budget, self.settings.max_work)

    def _ood_fpr(self, request: schemas.ScoreRequest) -> float | None:
        """The false-positive rate of this request's out-of-distribution flags; None without a calibration."""
        return (request.ood_fpr or self.settings.ood_fpr) if self.model.ood is not None else None

    def min_probability(self, requested: float | None = None) -> float:
        """The probability below which /v1/classify abstains: the request's, the setting's, or the model's."""
        if requested is not None:
            return requested
        if self.settings.min_probability is not None:
            return self.settings.min_probability
        entry = self.model.manifest["files"].get("ood") or {}
        return float(entry.get("abstention", {}).get("default_min_probability", 0.0))

    async def _posterior(self, request: schemas.ScoreRequest) -> Scored:
        request = request.model_copy(update={"seed": _seed(request.seed)})
        x, used, warnings = await asyncio.to_thread(self.images, request, estimator.binarization_stream(request.seed))
        k = self._num_samples(request.num_samples, len(x))
        precision = self._precision(request, k)
        estimates = await rounds.estimate_classes(
            self.calls.score,
            x,
            self.model.num_classes,
            self.model.latent_dim,
            k,
            request.seed,
            self.settings.score_chunk_rows,
            self.model.log_prior,
            self.screening if request.adaptive else None,
            precision,
        )
        echo = {
            "num_samples": k,
            "tolerance": precision and precision.tolerance,
            "max_num_samples": precision.budget if precision else k,
            "adaptive": request.adaptive,
            "seed": request.seed,
            **used,
            "ood_fpr": self._ood_fpr(request),
        }
        post = estimator.bayes_rule(estimates.classes, self.model.log_prior)
        log_odds, critic_probs = self.model.critic_answers(x) if self.model.ood is not None else (None, None)
        verdicts = self.assess(
            post.log_px, post.elbo, post.kl_z, estimates.classes.log_px_y, x, echo["ood_fpr"], log_odds
        )
        return Scored(estimates, post, echo, warnings, verdicts, x, critic_probs)

    def assess(
        self,
        log_px: np.ndarray,
        elbo: np.ndarray,
        kl_z: np.ndarray,
        log_px_y: np.ndarray,
        x: np.ndarray,
        fpr: float,
        critic: np.ndarray | None = None,
    ) -> list[dict | None]:
        """The out-of-distribution verdict per binary image x [N, H*W], from its estimates (ood.features)
        and the critic's log-odds (computed here when not given); None each when the model has no
        calibration."""
        calibration = self.model.ood
        if calibration is None:
            return [None] * len(x)
        if critic is None:
            critic = self.model.critic(x)
        values = ood.features(log_px, elbo, kl_z, log_px_y, x, self._shape(), calibration.log_probs, critic)
        return ood.assess(values, ood.ink_pixels(x), calibration, fpr)

    @staticmethod
    def _precision_of(estimates: rounds.Estimates, echo: dict, i: int) -> dict:
        return {
            "tolerance": echo["tolerance"],
            "met": bool(estimates.met[i]),
            "num_samples_used": int(estimates.samples_used[i]),
        }

    @staticmethod
    def _scored_x(scored: Scored, request: schemas.ScoreRequest, i: int) -> list[float] | None:
        return scored.x[i].tolist() if request.return_x else None

    async def score(self, request: schemas.ScoreRequest) -> dict:
        scored = await self._posterior(request)
        found, post, echo = scored.estimates, scored.posterior, scored.echo
        estimates = found.classes
        per_dim = self.model.x_dim * math.log(2)
        results = [
            {
                "log_px": _finite(post.log_px[i]),
                "log_px_std_error": _finite(post.log_px_std_error[i]),
                "log_px_reliable": bool(post.reliable[i]),
                "bits_per_dim": _finite(-post.log_px[i] / per_dim),
                "log_px_y": _finite_list(estimates.log_px_y[i]),
                "log_px_y_std_error": _finite_list(estimates.std_error[i]),
                "effective_sample_size": estimates.ess[i].tolist(),
                "pareto_k": _finite_list(estimates.pareto_k[i]),
                "num_samples_used": estimates.num_samples[i].tolist(),
                "precision": self._precision_of(found, echo, i),
                "elbo": {
                    "value": _finite(post.elbo[i]),
                    "reconstruction": _finite(post.reconstruction[i]),
                    "kl_z": _finite(post.kl_z[i]),
                    "kl_y": _finite(post.kl_y[i]),
                },
                "out_of_distribution": scored.verdicts[i],
                "warnings": scored.warnings[i],
                "x": self._scored_x(scored, request, i),
            }
            for i in range(len(post.log_px))
        ]
        return {**echo, "results": results}

    async def classify(self, request: schemas.ClassifyRequest) -> dict:
        scored = await self._posterior(request)
        found, post, echo = scored.estimates, scored.posterior, scored.echo
        min_probability = self.min_probability(request.min_probability)
        probs = np.exp(post.log_py_x)
        entropy = -np.where(probs > 0, probs * post.log_py_x, 0.0).sum(-1)  # 0 log 0 = 0
        flagged = np.array([verdict is not None and verdict["flagged"] for verdict in scored.verdicts])
        second = scored.critic_probs
        voted = request.critic_vote and second is not None
        holds = abstention.reasons(probs, second if voted else None, flagged, min_probability)
        results = []
        for i in range(len(probs)):
            reasons = abstention.names(holds[i])
            results.append(
                {
                    "probs": probs[i].tolist(),
                    "predicted": int(probs[i].argmax()),
                    "probability": float(probs[i].max()),
                    "entropy": float(max(entropy[i], 0.0)),
                    "log_px": _finite(post.log_px[i]),
                    "log_px_std_error": _finite(post.log_px_std_error[i]),
                    "log_px_reliable": bool(post.reliable[i]),
                    "precision": self._precision_of(found, echo, i),
                    "out_of_distribution": scored.verdicts[i],
                    "critic_probs": second[i].tolist() if second is not None else None,
                    "abstained": bool(reasons),
                    "abstain_reasons": reasons,
                    "warnings": scored.warnings[i],
                    "x": self._scored_x(scored, request, i),
                }
            )
        return {**echo, "min_probability": min_probability, "critic_vote": voted, "results": results}

    async def encode(self, request: schemas.EncodeRequest) -> dict:
        return await asyncio.to_thread(self._encode, request)

    def _encode(self, request: schemas.EncodeRequest) -> dict:
        self._check_class(request.y)
        seed = _seed(request.seed)
        x, used, _ = self.images(request, estimator.binarization_stream(seed))
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
        return {**used, "seed": seed, "results": results}

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
        mean, x = estimator.images_from_logits(logits, self.model.likelihood, rng)
        samples = [
            {
                "y": int(y[i]),
                "z": z[i].tolist(),
                "mean": mean[i].tolist(),
                "x": x[i].tolist() if binary and x is not None else None,
            }
            for i in range(len(y))
        ]
        return {"seed": seed, "samples": samples}

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
        self._check_count(n, self.settings.max_samples, fields[1] if z is None else "z", "max_samples")
        rng = np.random.default_rng(seed)
        classes = np.full(n, y) if y is not None else estimator.draw_classes(self.model, n, rng)
        if z is None:
            latents = rng.standard_normal((n, self.model.latent_dim))
        return classes, latents, rng

    async def sample(self, request: schemas.SampleRequest) -> dict:
        seed = _seed(request.seed)
        classes, latents, rng = self.sample_arrays(request.n, request.y, request.z, seed)
        return await self._render(classes, latents, rng, request.binary, seed)

    async def interpolate(self, request: schemas.InterpolateRequest) -> dict:
        self._check_class(request.y)
        self._check_count(request.steps, self.settings.max_samples, "steps", "max_samples")
        z_from = self._latents([request.z_from], "z_from")[0]
        z_to = self._latents([request.z_to], "z_to")[0]
        seed = _seed(request.seed)
        rng = np.random.default_rng(seed)
        y = request.y if request.y is not None else int(estimator.draw_classes(self.model, 1, rng)[0])
        path = estimator.interpolate(z_from, z_to, request.steps, request.spherical)
        return await self._render(np.full(request.steps, y), path, rng, request.binary, seed)

    async def sample_grid_png(self, n: int, y: int | None, seed: int | None, columns: int | None) -> tuple[bytes, int]:
        """The PNG grid and the seed it was drawn with."""
        seed = _seed(seed)
        classes, latents, rng = self.sample_arrays(n, y, None, seed, fields=("class", "n"))
        logits = await self.calls.decode(latents, classes)
        mean, _ = estimator.images_from_logits(logits, self.model.likelihood, rng)
        columns = columns or max(1, math.ceil(math.sqrt(n)))
        return await asyncio.to_thread(png_grid, mean, columns, self._shape()), seed


def score_images(
    inference: Inference, x: np.ndarray, seed: int, classify: bool = False, binarize: str = "none", **fields
) -> list[dict]:
    """/v1/log-likelihood's (or /v1/classify's) results for images x [N, 784] in [0, 1] (binary for
    binarize='none'), outside HTTP (benchmarks, evaluation, calibration), in requests small enough
    that rounds never meet the per-request work limit (CVAE_MAX_WORK), so that each image's answer
    depends on it alone. `fields` are further request fields."""
    s, classes = inference.settings, inference.model.num_classes
    most = s.max_num_samples if s.default_tolerance else s.default_num_samples  # per class, rounds included
    size = max(1, min(s.max_images, s.max_work // (classes * most)))
    request_type, endpoint = (
        (schemas.ClassifyRequest, inference.classify) if classify else (schemas.ScoreRequest, inference.score)
    )
    results = []
    for start in range(0, len(x), size):
        images = [row.tolist() for row in x[start : start + size]]
        request = request_type(images=images, binarize=binarize, seed=seed, pixel_scale="unit", **fields)
        results += asyncio.run(endpoint(request))["results"]
    return results
