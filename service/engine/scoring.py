"""One door to scoring: binary images as an array [N, H, W] plus options in, columns out.

The routes, batch scoring, screening, calibration, evaluation, the AIS comparison and the benchmarks
all score through `Scorer`; only service.engine.answers turns its columns into JSON.

When /v1/classify abstains (`abstention_reasons`), the answer's class should not be relied on.
p(y|x) is Bayes' rule over the generative model's per-class likelihoods, and stays the answer.
Whether to rely on its top class is decided from three pieces of evidence, each a reason:

    out_of_distribution   the image was flagged as unlike the training digits (service.engine.ood)
    low_probability       p(predicted|x) < min_probability: the model is unsure between classes
    critic_disagrees      the critic (training.critic), a discriminative network trained on the same
                          digits, gives the predicted class a probability below min_probability

The critic is a second opinion made another way: a convolutional classifier, not a likelihood.
Where the critic doubts the class Bayes' rule picked, the answer is often wrong: on validation
digits most of Bayes' rule's errors are among those few images. One threshold serves both: an
answer is kept when both models give its class at least min_probability. Models whose critic graph
has no digit probabilities abstain for the first two reasons only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, is_dataclass

import numpy as np

from service import telemetry
from service.engine import adaptive, estimator, ood
from service.engine.calls import ModelCalls, in_thread
from service.engine.runtime import Model, load_model
from service.failures import InputError
from service.schemas.options import ClassifyOptions
from service.settings import Defaults, Settings

REASONS = ("out_of_distribution", "low_probability", "critic_disagrees")


def abstention_reasons(
    probs: np.ndarray, critic_probs: np.ndarray | None, flagged: np.ndarray, min_probability: float
) -> np.ndarray:
    """[N, len(REASONS)] booleans: which reasons hold for each answer, from p(y|x) [N, C], the
    critic's digit probabilities [N, C] (or None), the out-of-distribution flags [N]."""
    predicted = probs.argmax(axis=1)
    low = probs.max(axis=1) < min_probability
    if critic_probs is None:
        disagrees = np.zeros(len(probs), dtype=bool)
    else:
        disagrees = critic_probs[np.arange(len(probs)), predicted] < min_probability
    return np.stack([np.asarray(flagged, dtype=bool), low, disagrees], axis=1)


@dataclass
class Scores:
    """Everything scoring gives, as columns over N images and C classes."""

    options: ClassifyOptions  # as resolved: every default filled in, the seed given
    classes: estimator.ClassEstimates  # per image and class [N, C]
    bayes: estimator.BayesRule  # log p(x), its error, log p(y|x) and the ELBO [N]
    met: np.ndarray  # [N] the tolerance was reached (True without one)
    samples_used: np.ndarray  # [N] importance samples spent, all classes together
    probs: np.ndarray  # [N, C] p(y|x)
    entropy: np.ndarray  # [N] nats
    verdicts: ood.Verdicts | None  # None without a calibration
    critic_probs: np.ndarray | None  # [N, C] the critic's digit probabilities
    critic_vote: bool  # whether they counted in `abstain`
    abstain: np.ndarray  # [N, len(abstention.REASONS)] which reasons hold
    x: np.ndarray  # [N, H*W] the binary pixels scored

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    @property
    def abstained(self) -> np.ndarray:
        return self.abstain.any(axis=1)


def check_count(count: int, limit: int, field: str, setting: str) -> None:
    """InputError naming `field` and the setting when `count` is above its `limit`."""
    if count > limit:
        raise InputError(field, f"asks for {count}; the limit is {limit} (setting CVAE_{setting.upper()}).")


TIMEOUT_SHARE = 0.5  # what one request may ask for takes at most this share of the timeout, alone


def work_limit(settings: Settings, passes_per_s: float | None) -> int:
    """The decoder passes one request may cost: CVAE_MAX_WORK, lowered to what this machine computes in
    half of CVAE_REQUEST_TIMEOUT_S at the rate measured when the version loaded (none measured: the setting)."""
    if passes_per_s is None:
        return settings.max_work
    return max(1, min(settings.max_work, int(passes_per_s * settings.request_timeout_s * TIMEOUT_SHARE)))


class Scorer:
    """A loaded model version's scoring, with the settings that bound it."""

    def __init__(self, model: Model, settings: Settings, calls: ModelCalls | None = None, screening=None):
        """`screening` (adaptive.Screening) replaces the model's own: a study's, never the service's."""
        self.model = model
        self.settings = settings
        self.calls = calls or ModelCalls(model, settings)
        self.max_work = work_limit(settings, model.passes_per_s)
        self.screening = screening or adaptive.screening_for(model.manifest)

    @classmethod
    def open(cls, model_dir, screen_samples: int | None = None, margin: float | None = None, **settings) -> Scorer:
        """The scorer of one exported model directory, for use outside the service (no batching): the
        settings' defaults with `settings` on top, never the service's environment. `screen_samples` or
        `margin` set: one screening look of those samples per class and that margin in nats, the other
        the model's own (else 64 and 20), instead of the model's screening."""
        chosen = Defaults(model_dir=model_dir, **settings)
        model = load_model(chosen)
        screening = adaptive.screening_for(model.manifest, screen_samples, margin)
        return cls(model, chosen, ModelCalls(model, chosen, batching=False), screening)

    # ---- options ------------------------------------------------------------------------
    def default_min_probability(self) -> float:
        """The setting's, else the model's (chosen on validation digits), else 0."""
        if self.settings.min_probability is not None:
            return self.settings.min_probability
        entry = self.model.manifest["files"].get("ood") or {}
        return float(entry.get("abstention", {}).get("default_min_probability", 0.0))

    def resolve(self, options: ClassifyOptions, num_images: int) -> ClassifyOptions:
        """The options with every default filled in, checked against the limits (InputError naming the field)."""
        s, classes = self.settings, self.model.num_classes
        k = options.num_samples or min(s.default_num_samples, s.max_num_samples)
        check_count(k, s.max_num_samples, "num_samples", "max_num_samples")
        work = num_images * classes * k
        if work > self.max_work:
            raise InputError(
                "num_samples",
                f"{num_images} images x {classes} classes x {k} samples = {work} decoder passes "
                f"exceeds the per-request limit {self.max_work} ({self.limit_reason()}); "
                "send fewer images per request or a smaller num_samples.",
            )
        budget = options.max_num_samples or s.max_num_samples
        check_count(budget, s.max_num_samples, "max_num_samples", "max_num_samples")
        if budget < k:
            raise InputError("max_num_samples", f"is {budget}, below num_samples {k}; raise it or omit it.")
        tolerance = options.tolerance or s.default_tolerance or None
        if tolerance is None or budget == k:
            tolerance, budget = None, k
        calibrated = self.model.ood is not None
        if options.seed is None:
            raise ValueError("scoring needs a seed: the answer gives it, so that it can be reproduced")
        min_probability = options.min_probability
        return options.model_copy(
            update={
                "num_samples": k,
                "tolerance": tolerance,
                "max_num_samples": budget,
                "ood_fpr": (options.ood_fpr or s.ood_fpr) if calibrated else None,
                "min_probability": self.default_min_probability() if min_probability is None else min_probability,
            }
        )

    def limit_reason(self) -> str:
        """Which setting the work limit comes from, for the errors that quote it."""
        if self.max_work == self.settings.max_work:
            return "setting CVAE_MAX_WORK"
        rate = self.model.passes_per_s
        return (
            f"what {rate:,.0f} passes/s, this machine's rate, computes in half of CVAE_REQUEST_TIMEOUT_S "
            f"= {self.settings.request_timeout_s:g} s; raise that setting to allow more"
        )

    # ---- scoring ------------------------------------------------------------------------
    async def score(self, images: np.ndarray, options: ClassifyOptions) -> Scores:
        """Score binary images [N, H, W] (or [N, H*W]): log p(x|y) per class, Bayes' rule, the
        out-of-distribution verdicts and the abstention, each image from its own noise streams."""
        x = self.pixels(images)
        options = self.resolve(options, len(x))
        manifest = self.model.manifest
        described = {"model.name": manifest["name"], "model.version": manifest["version"], "images": len(x)}
        with telemetry.span("score", **described, classes=self.model.num_classes, samples=options.num_samples):
            scores = await self._score(x, options)
            telemetry.annotate(samples_used=int(scores.samples_used.sum()))
            return scores

    async def _score(self, x: np.ndarray, options: ClassifyOptions) -> Scores:
        rounds = (
            adaptive.Rounds(options.tolerance, options.max_num_samples, self.max_work)
            if options.tolerance is not None
            else None
        )
        model = self.model
        estimates = await adaptive.estimate_classes(
            self.calls.score,
            x,
            model.num_classes,
            model.latent_dim,
            options.num_samples,
            options.seed,
            self.settings.score_chunk_rows,
            model.log_prior,
            self.screening if options.adaptive else None,
            rounds,
        )
        return await in_thread(self._conclude, x, options, estimates)

    def _conclude(self, x: np.ndarray, options: ClassifyOptions, estimates: adaptive.Estimates) -> Scores:
        """Bayes' rule, the assessment and the abstention from the estimates."""
        bayes = estimator.bayes_rule(estimates.classes, self.model.log_prior)
        probs = np.exp(bayes.log_py_x)
        entropy = np.maximum(-np.where(probs > 0, probs * bayes.log_py_x, 0.0).sum(-1), 0.0)  # 0 log 0 = 0
        verdicts, critic_probs = None, None
        if self.model.ood is not None:
            with telemetry.span("critic", images=len(x)):
                log_odds, critic_probs = self.model.critic_answers(x)
            with telemetry.span("assessment", images=len(x)):
                verdicts = self.assess(bayes, estimates.classes.log_px_y, x, options.ood_fpr, log_odds)
        voted = options.critic_vote and critic_probs is not None
        flagged = verdicts.flagged if verdicts is not None else np.zeros(len(x), dtype=bool)
        holds = abstention_reasons(probs, critic_probs if voted else None, flagged, options.min_probability)
        return Scores(
            options, estimates.classes, bayes, estimates.met, estimates.samples_used, probs, entropy,
            verdicts, critic_probs, voted, holds, x,
        )  # fmt: skip

    def assess(
        self, bayes: estimator.BayesRule, log_px_y: np.ndarray, x: np.ndarray, fpr: float, critic: np.ndarray
    ) -> ood.Verdicts:
        """The out-of-distribution verdicts of binary images x [N, H*W] from their estimates and the
        critic's log-odds [N]; the model must have a calibration."""
        shape = tuple(self.model.manifest["image_shape"])
        calibration = self.model.ood
        values = ood.features(bayes.log_px, bayes.elbo, bayes.kl_z, log_px_y, x, shape, calibration.log_probs, critic)
        return ood.assess(values, ood.ink_pixels(x), calibration, fpr)

    def pixels(self, images: np.ndarray) -> np.ndarray:
        """Images [N, H, W] or [N, H*W] as the rows [N, H*W] the graphs take (ValueError: another size)."""
        x = np.asarray(images)
        if x.ndim not in (2, 3) or x[0].size != self.model.x_dim:
            shape = self.model.manifest["image_shape"]
            raise ValueError(f"images of shape {list(x.shape)}: this model scores [N, {shape[0]}, {shape[1]}]")
        return x.reshape(len(x), -1)

    def score_now(self, images: np.ndarray, options: ClassifyOptions) -> Scores:
        """score() outside an event loop, in pieces of consecutive images small enough that rounds never
        meet the per-request work limit (CVAE_MAX_WORK): each piece is answered as the service answers a
        request holding it with the same seed, image j of the piece drawing the noise of (seed, j). For
        the answer to one image sent alone with a seed, score it alone (as batch scoring and evaluation do)."""
        x = self.pixels(images)
        most = self.resolve(options, 1).max_num_samples  # K, or the most that rounds may reach
        size = max(1, min(self.settings.max_images, self.max_work // (self.model.num_classes * most)))
        parts = [asyncio.run(self.score(x[start : start + size], options)) for start in range(0, len(x), size)]
        return parts[0] if len(parts) == 1 else join(parts)


def join(parts: list[Scores]) -> Scores:
    """Scores of consecutive pieces as one."""

    def rows(values: list):
        first = values[0]
        if isinstance(first, np.ndarray):
            return np.concatenate(values)
        if is_dataclass(first):
            fields = first.__dataclass_fields__
            return type(first)(**{name: rows([getattr(v, name) for v in values]) for name in fields})
        return first  # None, or a number every piece shares

    first = parts[0]
    shared = ("options", "critic_vote")
    names = [name for name in first.__dataclass_fields__ if name not in shared]
    columns = {name: rows([getattr(p, name) for p in parts]) for name in names}
    return Scores(**columns, **{name: getattr(first, name) for name in shared})
