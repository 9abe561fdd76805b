"""/v1's models: the served model's description, every version in the repository with its state, and loading
and unloading a version by request."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Depends, HTTPException, Query

from service import schemas
from service.engine.images import MAX_IMAGE_SIDE
from service.http.dependencies import InferenceDep, RepositoryDep, control_open, v1_router

router = v1_router()


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
            "max_image_side": MAX_IMAGE_SIDE,
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
async def list_models(repository: RepositoryDep):
    """Each version's state (loading, ready, failed with its reason, unloading, unloaded), the requests it
    is serving, and which one requests get by default: the newest ready version of the default model."""
    return {"models": repository.listing(), "refused": repository.refused, "default_rule": repository.default_rule()}


@router.post(
    "/models/{name}/versions/{version}/load",
    tags=["model"],
    summary="Load (or reload from disk) one version; it takes traffic once checked and warmed up",
    dependencies=[Depends(control_open)],
    response_model=schemas.ModelVersion,
    responses={
        403: {"model": schemas.ErrorResponse, "description": "Model control is closed: no API keys are set."},
        409: {"model": schemas.ErrorResponse, "description": "The version failed its checks."},
    },
)
async def load_version(name: str, version: str, repository: RepositoryDep):
    """Checks the version's files against its manifest, opens and warms up its graphs, then lets it take
    traffic; the version it replaces finishes its requests first. A version loaded this way stays loaded
    until it is unloaded by request. Needs an API key, or CVAE_MODEL_CONTROL=true when no keys are set."""
    entry = await repository.load(name, version)
    if entry.state == "failed":
        raise HTTPException(409, f"Model {name!r} version {version!r} failed its checks: {entry.reason}")
    return entry.describe()


@router.post(
    "/models/{name}/versions/{version}/unload",
    tags=["model"],
    summary="Take one version out of traffic; it finishes its requests first",
    dependencies=[Depends(control_open)],
    response_model=schemas.ModelVersion,
    responses={403: {"model": schemas.ErrorResponse, "description": "Model control is closed: no API keys are set."}},
)
async def unload_version(name: str, version: str, repository: RepositoryDep):
    """The version stops taking new requests at once and is unloaded when its running requests are done.
    It stays unloaded (the repository scan does not bring it back) until it is loaded by request. Needs an
    API key, or CVAE_MODEL_CONTROL=true when no keys are set."""
    return (await repository.unload(name, version)).describe()
