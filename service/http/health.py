"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.failures import NotServed

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz():
    """Always 200 while the process runs."""
    return {"status": "alive"}


@router.get(
    "/readyz",
    summary="Readiness: the model is loaded and warmed up",
    responses={503: {"description": "Still loading or warming up (with Retry-After), or no version can serve."}},
)
async def readyz(request: Request):
    """200 once a version of the default model is loaded, checked and warmed up; 503 before, with
    Retry-After while one is loading, without once none can (it is open to all, so it names no reasons).
    It stays 200 while versions are swapped: the old version serves until the new one is ready."""
    repository = getattr(request.app.state, "repository", None)
    try:
        if repository is not None:
            repository.resolve()
            return {"status": "ready"}
    except NotServed as error:
        if not error.loading:
            failed = {"status": "failed", "reason": "no version of the default model can serve (GET /v1/models)"}
            return JSONResponse(failed, status_code=503)
    return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": "1"})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request):
    """Requests, latencies, errors and batch sizes per endpoint, in the Prometheus text format."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
