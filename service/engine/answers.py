"""The JSON answers of /v1/log-likelihood and /v1/classify, built from scoring's columns in one place.

By default an image's answer holds what a caller acts on; each group of INCLUDE adds its
diagnostics when the request's `include` names it.
"""

from __future__ import annotations

import math

import numpy as np

from service.engine.scoring import REASONS, Scores
from service.schemas.options import ECHOED, ImageOptions, ScoreOptions, of


def number(value: float) -> float | None:
    """A float for JSON, None where it is not finite (JSON has no inf or NaN)."""
    value = float(value)
    return value if math.isfinite(value) else None


def numbers(values: np.ndarray) -> list[float | None]:
    return [number(v) for v in values.tolist()]


def header(name: str, version: str, class_names: list[str] | None = None) -> dict:
    """What every answer starts with: which model and version gave it (and the class names)."""
    head = {"model": name, "version": version}
    if class_names is not None:
        head["class_names"] = class_names
    return head


def settings(scores: Scores, images: ImageOptions, classify: bool) -> dict:
    """Every option a scoring answer used (service.schemas.options.ECHOED), defaults filled in."""
    own = set(ScoreOptions.model_fields) | set(ImageOptions.model_fields)  # not ClassifyOptions' own
    echoed = [name for name in ECHOED if classify or name in own]
    used = images.model_dump() | scores.options.model_dump() | {"critic_vote": scores.critic_vote}
    if images.binarize != "threshold":
        used["threshold"] = None
    return {name: used[name] for name in echoed}


def _verdict(scores: Scores, i: int, full: bool) -> dict | None:
    v = scores.verdicts
    if v is None:
        return None
    verdict = {"flagged": bool(v.flagged[i]), "p_value": float(v.p_value[i])}
    if full:
        verdict |= {
            "score": number(v.score[i]),
            "distance": number(v.distance[i]),
            "critic": number(v.critic[i]),
            "p_value_score": float(v.p_value_score[i]),
            "p_value_log_px": float(v.p_value_log_px[i]),
            "p_value_ink": float(v.p_value_ink[i]),
            "p_value_critic": number(v.p_value_critic[i]),
            "nearly_empty": bool(v.nearly_empty[i]),
        }
    return verdict


def _diagnostics(scores: Scores, include: set[str], i: int) -> dict:
    found, bayes, extra = scores.classes, scores.bayes, {}
    if "estimates" in include:
        extra |= {
            "entropy": float(scores.entropy[i]),
            "log_px_y": numbers(found.log_px_y[i]),
            "log_px_y_std_error": numbers(found.std_error[i]),
            "effective_sample_size": found.ess[i].tolist(),
            "pareto_k": numbers(found.pareto_k[i]),
            "num_samples_used": found.num_samples[i].tolist(),
        }
    if "elbo" in include:
        extra["elbo"] = {
            "value": number(bayes.elbo[i]),
            "reconstruction": number(bayes.reconstruction[i]),
            "kl_z": number(bayes.kl_z[i]),
            "kl_y": number(bayes.kl_y[i]),
        }
    if "critic" in include:
        extra["critic_probs"] = scores.critic_probs[i].tolist() if scores.critic_probs is not None else None
    if "x" in include:
        extra["x"] = scores.x[i].tolist()
    return extra


def _density(scores: Scores, i: int) -> dict:
    bayes = scores.bayes
    answer = {
        "log_px": number(bayes.log_px[i]),
        "log_px_std_error": number(bayes.log_px_std_error[i]),
        "log_px_reliable": bool(bayes.reliable[i]),
    }
    if scores.options.tolerance is not None:
        answer["tolerance_met"] = bool(scores.met[i])
    return answer


def answer(head: dict, scores: Scores, warnings: list[list[dict]], request, classify: bool) -> dict:
    """The JSON answer of /v1/classify (`classify`) or /v1/log-likelihood from the columns of `scores`:
    `head` (header()), the seed, the settings used when `request.include` asks, and one result per image."""
    include = set(request.include)
    body = {**head, "seed": scores.options.seed}
    if "settings" in include:
        body["settings"] = settings(scores, of(ImageOptions, request), classify)
    return {**body, "results": [_result(scores, i, warnings[i], include, classify) for i in range(len(scores.x))]}


def _result(scores: Scores, i: int, warnings: list[dict], include: set[str], classify: bool) -> dict:
    """One image's answer."""
    found = {}
    if classify:
        predicted = int(scores.predicted[i])
        found = {
            "predicted": predicted,
            "probability": float(scores.probs[i, predicted]),
            "probs": scores.probs[i].tolist(),
            "abstained": bool(scores.abstain[i].any()),
            "abstain_reasons": [name for name, holds in zip(REASONS, scores.abstain[i]) if holds],
        }
    found |= _density(scores, i)
    if not classify:
        found["bits_per_dim"] = number(-scores.bayes.log_px[i] / (scores.x.shape[1] * math.log(2)))
    found |= {"out_of_distribution": _verdict(scores, i, "ood" in include), "warnings": warnings}
    return found | _diagnostics(scores, include, i)
