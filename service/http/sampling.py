"""/v1's sampling: images drawn from p(x), given a class y or latent vectors z, along a path between two latent
points, and as a PNG grid for browsers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Body, Query, Request
from fastapi.responses import Response

from service import schemas
from service.http.dependencies import InferenceDep, ModelWorkDep, v1_router
from service.http.openapi import LIMITED

SAMPLE_EXAMPLE = {"n": 4, "y": 7, "seed": 1}

router = v1_router()


@router.post(
    "/samples",
    tags=["sampling"],
    summary="Sample images from p(x), or given a class y or latent vectors z",
    response_model=schemas.SampleResponse,
    responses=LIMITED,
)
async def sample(
    inference: InferenceDep,
    run: ModelWorkDep,
    body: Annotated[
        schemas.SampleRequest | None,
        Body(openapi_examples={"four sevens": {"summary": "4 samples of the digit 7", "value": SAMPLE_EXAMPLE}}),
    ] = None,
):
    """Draw y ~ p(y) (or use `y`), z ~ N(0, I) (or use `z`, one image per vector), and return the
    Bernoulli means of p(x|z,y), optionally with a binary draw. The `seed` in the answer reproduces it.
    Every field is optional: an empty body draws one image."""
    return await run(inference.sample(body or schemas.SampleRequest()), lambda answer: len(answer["samples"]))


@router.post(
    "/interpolations",
    tags=["sampling"],
    summary="Images along a path between two latent points",
    response_model=schemas.SampleResponse,
    responses=LIMITED,
)
async def interpolate(body: schemas.InterpolateRequest, inference: InferenceDep, run: ModelWorkDep):
    """Decode `steps` points from `z_from` to `z_to` (spherical by default) under one class y.
    Get endpoints from /v1/encode (the `mu` of two images) or pick any latent vectors."""
    return await run(inference.interpolate(body), lambda answer: len(answer["samples"]))


@router.get(
    "/samples.png",
    tags=["sampling"],
    summary="A PNG grid of samples, for browsers",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **LIMITED},
)
async def samples_png(
    inference: InferenceDep,
    run: ModelWorkDep,
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
    png, used = await run(inference.sample_grid_png(n, y, seed, columns), n)
    return Response(png, media_type="image/png", headers={"X-Seed": str(used), **request.state.model_headers})
