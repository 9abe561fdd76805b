"""/v1's scoring: the posterior q(z|x,y) of images, log p(x) by importance sampling, and p(y|x) by Bayes' rule."""

from __future__ import annotations

from service import schemas
from service.http.dependencies import InferenceDep, ModelWorkDep, v1_router
from service.http.openapi import LIMITED

router = v1_router()


@router.post(
    "/encode",
    tags=["scoring"],
    summary="The posterior q(z|x,y) of images: mean and standard deviation",
    response_model=schemas.EncodeResponse,
    responses=LIMITED,
)
async def encode(body: schemas.EncodeRequest, inference: InferenceDep, run: ModelWorkDep):
    """For each image, q(z|x,y) = N(mu, diag std^2) for the class `y`, or for every class when `y` is omitted."""
    return await run(inference.encode(body), len(body.images))


@router.post(
    "/log-likelihood",
    tags=["scoring"],
    summary="log p(x) by importance sampling, and on request log p(x|y) and the ELBO",
    response_model=schemas.ScoreResponse,
    response_model_exclude_unset=True,  # diagnostics only when asked for
    responses=LIMITED,
)
async def log_likelihood(body: schemas.ScoreRequest, inference: InferenceDep, run: ModelWorkDep):
    """Estimate log p(x|y) for every class with K = `num_samples` importance samples from q(z|x,y),
    then log p(x) = log sum_y p(y) p(x|y), in nats and bits per dimension, with its standard error,
    and whether the image looks like a digit at all (out_of_distribution: a high log p(x) alone does
    not say so). `include` adds diagnostics, among them "estimates": each log p(x|y) with its standard
    error and effective sample size, and "elbo": the ELBO split into reconstruction and KL terms."""
    return await run(inference.score(body), len(body.images))


@router.post(
    "/classify",
    tags=["scoring"],
    summary="p(y|x) for every class by Bayes' rule",
    response_model=schemas.ClassifyResponse,
    response_model_exclude_unset=True,  # diagnostics only when asked for
    responses=LIMITED,
)
async def classify(body: schemas.ClassifyRequest, inference: InferenceDep, run: ModelWorkDep):
    """p(y|x) = p(x|y) p(y) / p(x) from the same estimates as /v1/log-likelihood: every class's
    probability, the most probable class and log p(x). Each answer says whether the image looks like a
    digit at all (out_of_distribution) and whether to rely on the class (abstained, abstain_reasons:
    flagged, p(predicted|x) below min_probability, or, unless critic_vote is false, the critic's second
    opinion giving the predicted class less than min_probability). `include` adds diagnostics, among
    them "estimates": the entropy of p(y|x) and each log p(x|y), and "critic": the critic's probabilities."""
    return await run(inference.classify(body), len(body.images))
