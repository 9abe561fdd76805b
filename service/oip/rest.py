"""The Open Inference Protocol (KServe V2) over HTTP/REST for the three graphs, with JSON tensors
and the binary tensor data extension (what Triton's clients send by default): server and model
metadata and readiness, and POST /v2/models/{name}[/versions/{version}]/infer, checked against the
manifest and the limits before any data is read and run in chunks of CVAE_SCORE_CHUNK_ROWS rows
(service.oip.protocol.run, as over gRPC).

Models: `encoder` (x [N,784], y [N,10] one-hot -> mu, logvar), `decoder` (z [N,D], y -> logits)
and `scorer` (x, y, eps [K,N,D] -> log_w, log_px_z [K,N], kl [N]), exactly as in the manifest.

Names, metadata and runs are service.oip.protocol's (shared with gRPC), the tensors and their binary data
service.oip.tensors'; this module is HTTP: paths, versions, content types, status codes.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from service.failures import V2Error
from service.http.openapi import LIMITED
from service.oip import protocol, tensors
from service.oip.tensors import InferRequest
from service.operations.versions import is_ready, served_version


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


def _inline(schema: dict) -> dict:
    """A JSON schema with its local $defs references replaced by the definitions themselves."""
    defs = schema.pop("$defs", {})

    def walk(node):
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    return walk(schema)


async def _infer_request(request: Request) -> tuple[InferRequest, bytes]:
    """The JSON inference header (sent as JSON or, by Triton's clients, as octet-stream) and the binary
    tensor data after it. The content types a browser may send across origins without asking first
    (text/plain and the two form types) are refused, so that no other web page can run inference."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in SIMPLE_CONTENT_TYPES:
        raise V2Error(
            f"Content-Type {content_type} is not accepted: send application/json (or application/octet-stream "
            "with Inference-Header-Content-Length for binary tensors).",
            415,
        )
    raw = await request.body()  # a client that leaves meanwhile is logged as 499 by the middleware, unanswered
    header_length = request.headers.get(BINARY_HEADER)
    if header_length is None:
        header, binary = raw, b""
    elif not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(raw):
        raise V2Error(
            f"Inference-Header-Content-Length is {header_length!r} but the body has {len(raw)} bytes: it must count "
            "the bytes of the JSON request that comes before the binary data."
        )
    else:
        header, binary = raw[: int(header_length)], raw[int(header_length) :]
    try:
        return InferRequest.model_validate_json(header), binary
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise V2Error(f"Invalid inference request at {where}: {first.get('msg')}.") from error


INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": _inline(InferRequest.model_json_schema()),
                "example": {  # for name = decoder: the Bernoulli logits of one "3" at z = 0
                    "inputs": [
                        {"name": "z", "shape": [1, 32], "datatype": "FP32", "data": [0.0] * 32},
                        {"name": "y", "shape": [1, 10], "datatype": "FP32", "data": [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]},
                    ],
                    "outputs": [{"name": "logits"}],
                },
            }
        },
    }
}


@router.post(
    "/models/{name}/infer",
    summary="Run a model on JSON or binary tensors",
    openapi_extra=INFER_BODY,
    responses=LIMITED,
)
async def infer(request: Request, name: NamePath):
    """Run `encoder`, `decoder` or `scorer` (of the newest ready version) on the given tensors (row-major
    `data`, or binary tensor data after the JSON), returning the requested outputs (all by default).
    Class inputs `y` are one-hot rows. Every tensor is FP32."""
    return await _infer(request, name)


@router.post(
    "/models/{name}/versions/{version}/infer",
    summary="Run one version of a model",
    openapi_extra=INFER_BODY,
    responses=LIMITED,
)
async def infer_version(request: Request, name: NamePath, version: VersionPath):
    """As /v2/models/{name}/infer, on the named version."""
    return await _infer(request, name, version)


async def _infer(request: Request, name: str, version: str | None = None):
    """Parse, run on the version (held until the answer is made, so a swap never stops it) and answer."""
    with protocol.held(request.app.state, name, version) as (entry, graph):
        body, binary = await _infer_request(request)
        wanted, values = await protocol.run(request.app.state, name, entry, graph, body, binary)
        as_binary = tensors.binary_outputs(body, wanted)
        outputs, data = await asyncio.to_thread(tensors.encode, wanted, values, as_binary)
    answer = {"model_name": name, "model_version": entry.version, "outputs": outputs}
    if body.id is not None:
        answer["id"] = body.id
    if not as_binary:
        return answer
    header = json.dumps(answer).encode()
    return Response(
        header + data,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
