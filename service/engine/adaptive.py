"""How many importance samples each image and class gets: screening, then rounds to a precision.

1. Screening (optional): every class gets a few samples; only the classes whose screened
   log p(x, y) lies within a margin of the image's best take part further (optionally after a
   second look with more samples, among themselves).
2. The classes taking part get `num_samples` in all.
3. Rounds (optional): while an image's log p(x) has a standard error above the tolerance,
   or a class that carries p(y|x) >= estimator.RELEVANT has weights whose Pareto k-hat is
   too high, every such class of that image doubles its samples, up to a budget.

Each (image, class) draws from its own noise stream, and every decision about an image
depends on that image's samples alone, so the answer is the same however requests are
batched or chunked, and a seed reproduces it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from service.engine import estimator

ScoreFn = Callable[[np.ndarray, np.ndarray, np.ndarray], Awaitable[tuple[np.ndarray, np.ndarray, np.ndarray]]]


@dataclass(frozen=True)
class Screening:
    """Every class first gets `samples` draws; only classes whose screened log p(x, y) lies
    within `margin` nats of the image's best get more. With `recheck` = (samples, margin), those
    classes first get that many draws in all and are screened again, among themselves, at that
    margin; the classes left get all K."""

    samples: int
    margin: float
    recheck: tuple[int, float] | None = None

    def looks(self) -> tuple[tuple[int, float], ...]:
        """(samples, margin) of each look in turn."""
        return ((self.samples, self.margin),) + ((self.recheck,) if self.recheck else ())

    def record(self) -> list[list]:
        """Its looks as records hold them: [[samples, margin], ...]."""
        return [list(look) for look in self.looks()]

    def text(self) -> str:
        """How records name it (a calibration's settings, the check against them)."""
        return "screening " + ", then ".join(f"{s} samples, margin {float(m)} nats" for s, m in self.looks())


DEFAULT_SCREENING = Screening(64, 20.0)  # for a model whose manifest names none


def _look(entry: dict, name: str) -> tuple[int, float]:
    samples, margin = entry.get("samples"), entry.get("margin")
    if not (isinstance(samples, int) and samples >= 1 and isinstance(margin, int | float) and margin > 0):
        raise ValueError(
            f"manifest.json: {name}.samples must be an integer >= 1 and {name}.margin a number > 0 (got "
            f"{samples!r} and {margin!r}); run `cvae screening MODEL_DIR` again or remove the entry"
        )
    return samples, float(margin)


def screening_for(manifest: dict, samples: int | None = None, margin: float | None = None) -> Screening:
    """The model's own screening (its manifest's `screening`, chosen on validation digits by
    `cvae screening`), else DEFAULT_SCREENING; `samples` or `margin` where given
    (a study's, through Scorer.open) replace its first look, and it is then that look alone."""
    own = manifest.get("screening")
    if own is None:
        own_screening = DEFAULT_SCREENING
    else:
        first = _look(own, "screening")
        recheck = _look(own["recheck"], "screening.recheck") if own.get("recheck") is not None else None
        if recheck is not None and recheck[0] <= first[0]:
            raise ValueError(
                f"manifest.json: screening.recheck.samples ({recheck[0]}) must exceed screening.samples ({first[0]}); "
                "run `cvae screening MODEL_DIR` again or remove the entry"
            )
        own_screening = Screening(*first, recheck)
    if samples is None and margin is None:
        return own_screening
    return Screening(
        samples if samples is not None else own_screening.samples,
        margin if margin is not None else own_screening.margin,
    )


@dataclass(frozen=True)
class Rounds:
    """Rounds until log p(x) has a standard error of at most `tolerance` nats and reliable
    weights, with at most `budget` samples per class and `max_work` decoder passes in all."""

    tolerance: float
    budget: int
    max_work: int | None = None


@dataclass
class Estimates:
    """What the rounds produced: the per-class estimates, and per image [N] whether the
    precision was met (True when none was asked for) and the samples spent."""

    classes: estimator.ClassEstimates
    met: np.ndarray
    samples_used: np.ndarray


class _Rows:
    """The log-weights and log p(x|z,y) drawn so far for each (image, class) row."""

    def __init__(self, count: int):
        self.log_w: list[list[np.ndarray]] = [[] for _ in range(count)]
        self.lpx_z: list[list[np.ndarray]] = [[] for _ in range(count)]
        self.used = np.zeros(count, dtype=np.int64)

    def add(self, rows: np.ndarray, log_w: np.ndarray, lpx_z: np.ndarray) -> None:
        for j, r in enumerate(rows):
            self.log_w[r].append(log_w[:, j])
            self.lpx_z[r].append(lpx_z[:, j])
            self.used[r] += log_w.shape[0]

    def weights(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate(self.log_w[r]), np.concatenate(self.lpx_z[r])


async def _draw_and_score(
    score: ScoreFn, rows_x: np.ndarray, rows_y: np.ndarray, gens: list, k: int, latent_dim: int, chunk_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """The next k draws of every row's stream, scored: log_w and log p(x|z,y) [k, R]."""
    total = len(rows_x)
    rows_per_call = max(1, chunk_rows // k)
    k_per_call = min(k, chunk_rows)
    log_w = np.empty((k, total), dtype=np.float32)
    lpx_z = np.empty((k, total), dtype=np.float32)
    for r0 in range(0, total, rows_per_call):
        r1 = min(total, r0 + rows_per_call)
        for k0 in range(0, k, k_per_call):
            k1 = min(k, k0 + k_per_call)
            eps = await asyncio.to_thread(estimator.draw_noise, gens[r0:r1], k1 - k0, latent_dim)  # [k, rows, D]
            log_w[k0:k1, r0:r1], lpx_z[k0:k1, r0:r1], _ = await score(rows_x[r0:r1], rows_y[r0:r1], eps)
    return log_w, lpx_z


def estimate_now(
    model,
    x: np.ndarray,
    num_samples: int,
    seed: int,
    chunk_rows: int,
    screening: Screening | None = None,
    rounds: Rounds | None = None,
) -> Estimates:
    """estimate_classes for a loaded model (service.engine.runtime.Model) in this process, outside the
    service's loop."""

    async def score(rows_x, rows_y, eps):
        return model.log_weights(rows_x, rows_y, eps)

    return asyncio.run(
        estimate_classes(
            score,
            x,
            model.num_classes,
            model.latent_dim,
            num_samples,
            seed,
            chunk_rows,
            model.log_prior,
            screening,
            rounds,
        )
    )


async def estimate_classes(
    score: ScoreFn,
    x: np.ndarray,
    num_classes: int,
    latent_dim: int,
    num_samples: int,
    seed: int,
    chunk_rows: int,
    log_prior: np.ndarray | None = None,
    screening: Screening | None = None,
    rounds: Rounds | None = None,
) -> Estimates:
    """Importance-sampling estimates of log p(x|y) for every image x [N, 784] and class.

    With `screening` (and `log_prior`), classes that cannot matter keep their screening
    estimate; the others draw on from the same streams, so their estimates equal the
    exhaustive ones exactly. With `rounds` (and `log_prior`), rounds follow.
    """
    n, c = len(x), num_classes
    rows_x = np.repeat(x, c, axis=0)  # [N*C, 784]: row i*C + j is image i with class j
    rows_y = np.tile(np.arange(c), n)  # [N*C]
    gens = await asyncio.to_thread(estimator.noise_streams, seed, n, c)
    drawn = _Rows(n * c)

    async def extend(rows: np.ndarray, counts: np.ndarray) -> None:
        """Give each row in `rows` `counts` more samples; rows asking the same count share calls."""
        for k in np.unique(counts):
            group = rows[counts == k]
            log_w, lpx_z = await _draw_and_score(
                score, rows_x[group], rows_y[group], [gens[r] for r in group], int(k), latent_dim, chunk_rows
            )
            drawn.add(group, log_w, lpx_z)

    in_play = np.ones(n * c, dtype=bool)
    looks = [look for look in screening.looks() if look[0] < num_samples] if screening is not None else []
    drawn_each = 0  # samples every row in play has so far
    for samples, margin in looks:
        rows = np.nonzero(in_play)[0]
        await extend(rows, np.full(len(rows), samples - drawn_each))
        drawn_each = samples
        screened = np.full(n * c, -np.inf)
        screened[rows] = estimator.log_mean_exp(
            np.stack([drawn.weights(r)[0] for r in rows], axis=1).astype(np.float64), axis=0
        )
        screened = screened.reshape(n, c) + log_prior
        in_play &= (screened >= screened.max(axis=1, keepdims=True) - margin).ravel()
    keep = np.nonzero(in_play)[0]
    await extend(keep, np.full(len(keep), num_samples - drawn_each))
    classes = await asyncio.to_thread(_reduce, drawn, n, c)
    met = np.ones(n, dtype=bool)
    if rounds is not None:
        classes, met = await _refine(classes, drawn, in_play.reshape(n, c), extend, log_prior, rounds, n, c)
    return Estimates(classes, met, drawn.used.reshape(n, c).sum(axis=1))


def _needs_more(classes: estimator.ClassEstimates, log_prior: np.ndarray, tolerance: float):
    """Per image [N]: whether it misses the target, and per class [N, C] which classes matter."""
    post = estimator.bayes_rule(classes, log_prior)
    matter = np.exp(post.log_py_x) >= estimator.RELEVANT
    return (post.log_px_std_error > tolerance) | ~post.reliable, matter


async def _refine(classes, drawn: _Rows, in_play: np.ndarray, extend, log_prior, rounds: Rounds, n: int, c: int):
    """Double the samples of the classes that matter in images that miss the target, until
    every image meets it or can draw no more; returns the estimates and per image `met`."""
    while True:
        missing, matter = _needs_more(classes, log_prior, rounds.tolerance)
        used = drawn.used.reshape(n, c)
        grow = missing[:, None] & matter & in_play & (used < rounds.budget)
        counts = np.minimum(used, rounds.budget - used)[grow]
        if rounds.max_work is not None and drawn.used.sum() + counts.sum() > rounds.max_work:
            return classes, ~missing
        if not grow.any():
            return classes, ~missing
        await extend(np.nonzero(grow.ravel())[0], counts)
        classes = await asyncio.to_thread(_reduce, drawn, n, c)


def _reduce(drawn: _Rows, n: int, c: int) -> estimator.ClassEstimates:
    """Per-row log-weights of any length -> the [N, C] estimates."""
    keys = ("log_px_y", "std_error", "ess", "pareto_k", "reliable", "reconstruction", "kl")
    out = {key: np.empty(n * c) for key in keys}
    out["reliable"] = np.empty(n * c, dtype=bool)
    for length in np.unique(drawn.used):
        rows = np.nonzero(drawn.used == length)[0]
        pairs = [drawn.weights(r) for r in rows]
        log_w = np.stack([w for w, _ in pairs], axis=1).astype(np.float64)  # [length, rows]
        lpx_z = np.stack([lp for _, lp in pairs], axis=1).astype(np.float64)
        reduced = estimator.reduce_log_weights(log_w)
        for key, value in zip(keys[:5], reduced):
            out[key][rows] = value
        out["reconstruction"][rows] = lpx_z.mean(0)
        out["kl"][rows] = (lpx_z - log_w).mean(0)  # E_q[log q(z|x,y) - log p(z)]
    shaped = {key: value.reshape(n, c) for key, value in out.items()}
    return estimator.ClassEstimates(num_samples=drawn.used.reshape(n, c).copy(), **shaped)
