"""The /v1 API: sampling, encoding, scoring, classifying, and the model's description."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request
from fastapi.responses import Response

from service import schemas
from service.routes.dependencies import InferenceDep, known_query
from service.routes.openapi import LIMITED, RETRY_AFTER

ERRORS = {
    404: {
        "model": schemas.ErrorResponse,
        "description": "No such model or version, or the version failed its checks or was unloaded (GET /v1/models).",
    },
    413: {"model": schemas.ErrorResponse, "description": "The body is larger than the limit."},
    422: {"model": schemas.ErrorResponse, "description": "A field is invalid; the body names it and the fix."},
    503: {
        "model": schemas.ErrorResponse,
        "description": "The model is still loading, or the service is at capacity; retry after Retry-After.",
        "headers": RETRY_AFTER,
    },
    504: {"model": schemas.ErrorResponse, "description": "The request took longer than the timeout setting."},
}


SAMPLE_EXAMPLE = {"n": 4, "y": 7, "seed": 1}

router = APIRouter(prefix="/v1", responses=ERRORS, dependencies=[Depends(known_query)])


async def _admit(request: Request, work):
    """Run model work under the app's admission bounds, its caller's share and the timeout."""
    return await request.app.state.admission.run(work)


def _observe(request: Request, endpoint: str, count: int) -> None:
    request.app.state.metrics.batch_size.labels(endpoint).observe(count)


@router.post(
    "/samples",
    tags=["sampling"],
    summary="Sample images from p(x), or given a class y or latent vectors z",
    response_model=schemas.SampleResponse,
    responses=LIMITED,
)
async def sample(
    inference: InferenceDep,
    request: Request,
    body: Annotated[
        schemas.SampleRequest | None,
        Body(openapi_examples={"four sevens": {"summary": "4 samples of the digit 7", "value": SAMPLE_EXAMPLE}}),
    ] = None,
):
    """Draw y ~ p(y) (or use `y`), z ~ N(0, I) (or use `z`, one image per vector), and return the
    Bernoulli means of p(x|z,y), optionally with a binary draw. The `seed` in the answer reproduces it.
    Every field is optional: an empty body draws one image."""
    result = await _admit(request, inference.sample(body or schemas.SampleRequest()))
    _observe(request, "/v1/samples", len(result["samples"]))
    return result


@router.post(
    "/interpolations",
    tags=["sampling"],
    summary="Images along a path between two latent points",
    response_model=schemas.SampleResponse,
    responses=LIMITED,
)
async def interpolate(body: schemas.InterpolateRequest, inference: InferenceDep, request: Request):
    """Decode `steps` points from `z_from` to `z_to` (spherical by default) under one class y.
    Get endpoints from /v1/encode (the `mu` of two images) or pick any latent vectors."""
    result = await _admit(request, inference.interpolate(body))
    _observe(request, "/v1/interpolations", len(result["samples"]))
    return result


@router.post(
    "/encode",
    tags=["scoring"],
    summary="The posterior q(z|x,y) of images: mean and standard deviation",
    response_model=schemas.EncodeResponse,
    responses=LIMITED,
)
async def encode(body: schemas.EncodeRequest, inference: InferenceDep, request: Request):
    """For each image, q(z|x,y) = N(mu, diag std^2) for the class `y`, or for every class when `y` is omitted."""
    result = await _admit(request, inference.encode(body))
    _observe(request, "/v1/encode", len(body.images))
    return result


@router.post(
    "/log-likelihood",
    tags=["scoring"],
    summary="log p(x) by importance sampling, and on request log p(x|y) and the ELBO",
    response_model=schemas.ScoreResponse,
    response_model_exclude_unset=True,  # diagnostics only when asked for
    responses=LIMITED,
)
async def log_likelihood(body: schemas.ScoreRequest, inference: InferenceDep, request: Request):
    """Estimate log p(x|y) for every class with K = `num_samples` importance samples from q(z|x,y),
    then log p(x) = log sum_y p(y) p(x|y), in nats and bits per dimension, with its standard error,
    and whether the image looks like a digit at all (out_of_distribution: a high log p(x) alone does
    not say so). `include` adds diagnostics, among them "estimates": each log p(x|y) with its standard
    error and effective sample size, and "elbo": the ELBO split into reconstruction and KL terms."""
    result = await _admit(request, inference.score(body))
    _observe(request, "/v1/log-likelihood", len(body.images))
    return result


@router.post(
    "/classify",
    tags=["scoring"],
    summary="p(y|x) for every class by Bayes' rule",
    response_model=schemas.ClassifyResponse,
    response_model_exclude_unset=True,  # diagnostics only when asked for
    responses=LIMITED,
)
async def classify(body: schemas.ClassifyRequest, inference: InferenceDep, request: Request):
    """p(y|x) = p(x|y) p(y) / p(x) from the same estimates as /v1/log-likelihood: every class's
    probability, the most probable class and log p(x). Each answer says whether the image looks like a
    digit at all (out_of_distribution) and whether to rely on the class (abstained, abstain_reasons:
    flagged, p(predicted|x) below min_probability, or, unless critic_vote is false, the critic's second
    opinion giving the predicted class less than min_probability). `include` adds diagnostics, among
    them "estimates": the entropy of p(y|x) and each log p(x|y), and "critic": the critic's probabilities."""
    result = await _admit(request, inference.classify(body))
    _observe(request, "/v1/classify", len(body.images))
    return result


@router.get(
    "/samples.png",
    tags=["sampling"],
    summary="A PNG grid of samples, for browsers",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **LIMITED},
)
async def samples_png(
    inference: InferenceDep,
    request: Request,
    y: Annotated[int | None, Query(description="Class of every image; omit for y ~ p(y).")] = None,
    n: Annotated[int, Query(ge=1, description="Number of images.")] = 64,
    seed: Annotated[
        int | None,
        Query(ge=0, lt=2**63, description="Seed of the draws; omit for fresh ones (the X-Seed header says which)."),
    ] = None,
    columns: Annotated[int | None, Query(ge=1, le=64, description="Images per row (default: square).")] = None,
):
    """Bernoulli means of n samples, tiled black on white for viewing, e.g. /v1/samples.png?y=3&n=64.

    The scoring endpoints take the opposite polarity (bright = ink, as in MNIST and in /v1/samples):
    send a tile cut from this picture with invert: true."""
    png, used = await _admit(request, inference.sample_grid_png(n, y, seed, columns))
    _observe(request, "/v1/samples.png", n)
    return Response(png, media_type="image/png", headers={"X-Seed": str(used), **request.state.model_headers})


@router.get(
    "/model",
    tags=["model"],
    summary="The model: sizes, classes, prior, likelihood, metrics, providers",
    response_model=schemas.ModelInfo,
    response_model_exclude_unset=True,  # diagnostics only when asked for
)
async def model_info(
    inference: InferenceDep,
    include: Annotated[
        Literal["manifest"] | None,
        Query(description="'manifest': add the whole manifest (every file, its sha256, how it was made, all metrics)."),
    ] = None,
):
    """The served model's sizes, classes, prior, headline metrics, the execution providers ONNX Runtime really
    uses, and the limits and defaults of requests."""
    manifest = inference.model.manifest
    s = inference.settings
    return {
        "model": manifest["name"],
        "version": manifest["version"],
        "description": manifest.get("description"),
        **{key: manifest.get(key) for key in ("latent_dim", "num_classes", "image_shape", "likelihood", "class_prior")},
        "class_names": inference.class_names(),
        "metrics": {key: value for key, value in manifest.get("metrics", {}).items() if not isinstance(value, dict)},
        "requested_providers": inference.model.requested,
        "active_providers": inference.model.active_providers,
        "limits": {
            "max_images": s.max_images,
            "max_image_side": s.max_image_side,
            "max_request_pixels": s.max_request_pixels,
            "max_samples": s.max_samples,
            "max_num_samples": s.max_num_samples,
            "default_num_samples": s.default_num_samples,
            "default_tolerance": s.default_tolerance,
            "max_work": inference.scorer.max_work,
            "max_body_bytes": s.max_body_bytes,
            "adaptive_screening": [
                {"samples": samples, "margin": margin} for samples, margin in inference.scorer.screening.looks()
            ],
            "ood_fpr": s.ood_fpr if inference.model.ood is not None else None,
            "min_probability": inference.scorer.default_min_probability(),
        },
        **({"manifest": manifest} if include == "manifest" else {}),
    }


@router.get(
    "/models",
    tags=["model"],
    summary="Every model version in the repository, with its state",
    response_model=schemas.ModelList,
)
async def list_models(request: Request):
    """Each version's state (loading, ready, failed with its reason, unloading, unloaded), the requests it
    is serving, and which one requests get by default: the newest ready version of the default model."""
    repository = _repository(request)
    return {"models": repository.listing(), "refused": repository.refused, "default_rule": repository.default_rule()}


def _repository(request: Request):
    repository = request.app.state.repository
    if repository is None:
        raise HTTPException(503, "The model repository is still loading; retry shortly.", headers={"Retry-After": "1"})
    return repository


@router.post(
    "/models/{name}/versions/{version}/load",
    tags=["model"],
    summary="Load (or reload from disk) one version; it takes traffic once checked and warmed up",
    response_model=schemas.ModelVersion,
    responses={
        403: {"model": schemas.ErrorResponse, "description": "Model control is closed: no API keys are set."},
        409: {"model": schemas.ErrorResponse, "description": "The version failed its checks."},
    },
)
async def load_version(name: str, version: str, request: Request):
    """Checks the version's files against its manifest, opens and warms up its graphs, then lets it take
    traffic; the version it replaces finishes its requests first. A version loaded this way stays loaded
    until it is unloaded by request. Needs an API key, or CVAE_MODEL_CONTROL=true when no keys are set."""
    _control(request)
    entry = await _repository(request).load(name, version)
    if entry.state == "failed":
        raise HTTPException(409, f"Model {name!r} version {version!r} failed its checks: {entry.reason}")
    return entry.describe()


@router.post(
    "/models/{name}/versions/{version}/unload",
    tags=["model"],
    summary="Take one version out of traffic; it finishes its requests first",
    response_model=schemas.ModelVersion,
    responses={403: {"model": schemas.ErrorResponse, "description": "Model control is closed: no API keys are set."}},
)
async def unload_version(name: str, version: str, request: Request):
    """The version stops taking new requests at once and is unloaded when its running requests are done.
    It stays unloaded (the repository scan does not bring it back) until it is loaded by request. Needs an
    API key, or CVAE_MODEL_CONTROL=true when no keys are set."""
    _control(request)
    return (await _repository(request).unload(name, version)).describe()


def _control(request: Request) -> None:
    """403 while loading and unloading versions is closed (Settings.control_closed)."""
    closed = request.app.state.settings.control_closed
    if closed:
        raise HTTPException(403, closed)
