"""The Open Inference Protocol (KServe V2) over HTTP/REST for the three graphs, with JSON tensors
and the binary tensor data extension (what Triton's clients send by default).

Models: `encoder` (x [N,784], y [N,10] one-hot -> mu, logvar), `decoder` (z [N,D], y -> logits)
and `scorer` (x, y, eps [K,N,D] -> log_w, log_px_z [K,N], kl [N]), exactly as in the manifest.

The tensors and their binary data are read and written by service.tensors, and a run is cut into
chunks of CVAE_SCORE_CHUNK_ROWS rows by service.chunks; this module is HTTP: paths, versions,
content types, limits, status codes.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from service import tensors
from service.routes.health import is_ready, served_version
from service.runtime import GRAPHS
from service.tensors import DATATYPE
from service.versions import NotServed, version_key


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


class V2Error(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def repository_of(request: Request):
    repository = request.app.state.repository
    if repository is None:
        raise V2Error("The model is still loading; retry shortly.", 503)
    return repository


def _split(request: Request, name: str) -> tuple[str | None, str]:
    """(model, graph) of a protocol model name: a graph of the default model (`scorer`) or of a named
    model (`mnist-cvae-scorer`)."""
    if name in GRAPHS:
        return None, name
    model, _, graph = name.rpartition("-")
    repository = repository_of(request)
    if graph not in GRAPHS or model not in {n for n, _ in repository.serving}:
        names = [*GRAPHS, *(f"{m}-{g}" for m in sorted({n for n, _ in repository.serving}) for g in GRAPHS)]
        raise V2Error(f"Unknown model {name!r}; models are {names}.", 404)
    return model, graph


def graph_version(request: Request, name: str, version: str | None = None):
    """The repository's version behind a protocol model name (the newest ready one unless named), and its graph."""
    model, graph = _split(request, name)
    try:
        return repository_of(request).resolve(model, version), graph
    except NotServed as error:
        raise V2Error(error.message, 503 if error.loading else 404) from error


def _metadata(request: Request, name: str, version: str | None = None) -> dict:
    entry, graph = graph_version(request, name, version)
    declared = entry.inference.model.manifest["files"][graph]
    described = lambda args: [  # noqa: E731
        {"name": n, "datatype": DATATYPE, "shape": tensors.shape(s)} for n, s in args.items()
    ]
    ready = [v for (n, v), e in repository_of(request).serving.items() if n == entry.name and e.state == "ready"]
    return {
        "name": name,
        "versions": sorted(ready, key=version_key),
        "platform": "onnxruntime_onnx",
        "inputs": described(declared["inputs"]),
        "outputs": described(declared["outputs"]),
    }


def install(app) -> None:
    @app.exception_handler(V2Error)
    async def v2_error(request: Request, exc: V2Error) -> JSONResponse:
        return _error(exc.message, exc.status)


@router.get("", summary="Server metadata")
async def server_metadata(request: Request):
    """Name, version (of the model that answers requests naming none) and protocol extensions of this server."""
    version = served_version(request.app) or request.app.version
    return {"name": "mnist-cvae", "version": version, "extensions": ["binary_tensor_data"]}


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
    return _metadata(request, name)


@router.get("/models/{name}/versions/{version}", summary="Metadata of one version")
async def version_metadata(name: NamePath, version: VersionPath, request: Request):
    """As /v2/models/{name}, with the shapes of that version's manifest."""
    return _metadata(request, name, version)


@router.get("/models/{name}/ready", summary="Model readiness")
async def model_ready(name: NamePath, request: Request):
    """200 when a version of the model can answer; 404 for an unknown model, 503 while none is ready."""
    graph_version(request, name)
    return {"name": name, "ready": True}


@router.get("/models/{name}/versions/{version}/ready", summary="Readiness of one version")
async def version_ready(name: NamePath, version: VersionPath, request: Request):
    """200 when that version takes traffic; 404 when it is unknown, failed or unloaded, 503 while it loads."""
    graph_version(request, name, version)
    return {"name": name, "version": version, "ready": True}
