"""The Open Inference Protocol (KServe V2) over HTTP/REST for the three graphs, with JSON tensors
and the binary tensor data extension (what Triton's clients send by default).

Models: `encoder` (x [N,784], y [N,10] one-hot -> mu, logvar), `decoder` (z [N,D], y -> logits)
and `scorer` (x, y, eps [K,N,D] -> log_w, log_px_z [K,N], kl [N]), exactly as in the manifest.

Names, metadata and runs are service.protocol's (shared with gRPC), the tensors and their binary data
service.tensors'; this module is HTTP: paths, versions, content types, status codes.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from service import protocol
from service.protocol import V2Error
from service.routes.health import is_ready, served_version


class ProtocolError(BaseModel):
    error: str


RESPONSES = {
    status: {"model": ProtocolError, "description": text}
    for status, text in (
        (400, "The tensors are malformed or do not fit the model."),
        (404, "No model of that name: the models are encoder, decoder and scorer."),
        (413, "Too many rows for one request."),
        (415, "A content type that browsers send across origins: use application/json."),
        (503, "The model is still loading, or the service is at capacity."),
    )
}
TAGS = ["Open Inference Protocol (KServe V2)"]
router = APIRouter(prefix="/v2", tags=TAGS, responses=RESPONSES)

BINARY_HEADER = "inference-header-content-length"
SIMPLE_CONTENT_TYPES = {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"}


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def install(app) -> None:
    @app.exception_handler(V2Error)
    async def v2_error(request: Request, exc: V2Error) -> JSONResponse:
        return _error(exc.message, exc.status)


@router.get("", summary="Server metadata")
async def server_metadata(request: Request):
    """Name, version (of the model that answers requests naming none) and protocol extensions of this server."""
    version = served_version(request.app) or request.app.version
    return {"name": protocol.SERVER_NAME, "version": version, "extensions": ["binary_tensor_data"]}


@router.get("/health/live", summary="Server liveness")
async def live():
    """200 while the process runs."""
    return {"live": True}


@router.get("/health/ready", summary="Server readiness")
async def ready(request: Request):
    """200 once the model is loaded and warmed up; 503 before."""
    if is_ready(request.app):
        return {"ready": True}
    return _error("The model is still loading.", 503)


NAME_DOC = "encoder, decoder or scorer of the default model, or <model>-<graph> of a named one (e.g. mnist-cvae-scorer)"
VERSION_DOC = "a version of the model (GET /v1/models); the newest ready one on the paths without it"
NamePath = Annotated[str, Path(description=NAME_DOC, examples=["decoder"])]
VersionPath = Annotated[str, Path(description=VERSION_DOC, examples=["1.0.0"])]


@router.get("/models/{name}", summary="Model metadata: input and output tensors")
async def model_metadata(name: NamePath, request: Request):
    """Inputs and outputs of the graph, with datatypes and shapes (-1: any size), and the ready versions."""
    return protocol.metadata(request.app.state, name)


@router.get("/models/{name}/versions/{version}", summary="Metadata of one version")
async def version_metadata(name: NamePath, version: VersionPath, request: Request):
    """As /v2/models/{name}, with the shapes of that version's manifest."""
    return protocol.metadata(request.app.state, name, version)


@router.get("/models/{name}/ready", summary="Model readiness")
async def model_ready(name: NamePath, request: Request):
    """200 when a version of the model can answer; 404 for an unknown model, 503 while none is ready."""
    protocol.graph_version(request.app.state, name)
    return {"name": name, "ready": True}


@router.get("/models/{name}/versions/{version}/ready", summary="Readiness of one version")
async def version_ready(name: NamePath, version: VersionPath, request: Request):
    """200 when that version takes traffic; 404 when it is unknown, failed or unloaded, 503 while it loads."""
    protocol.graph_version(request.app.state, name, version)
    return {"name": name, "version": version, "ready": True}
