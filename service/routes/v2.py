"""The Open Inference Protocol (KServe V2) over HTTP/REST for the three graphs, with JSON tensors
and the binary tensor data extension (what Triton's clients send by default).

Models: `encoder` (x [N,784], y [N,10] one-hot -> mu, logvar), `decoder` (z [N,D], y -> logits)
and `scorer` (x, y, eps [K,N,D] -> log_w, log_px_z [K,N], kl [N]), exactly as in the manifest.

The tensors and their binary data are read and written by service.tensors, and a run is cut into
chunks of CVAE_SCORE_CHUNK_ROWS rows by service.chunks; this module is HTTP: paths, versions,
content types, limits, status codes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from service import chunks, tensors
from service.routes.health import is_ready, served_version
from service.runtime import GRAPHS
from service.tensors import DATATYPE, InferRequest, TensorError
from service.versions import NotServed, version_key


class ProtocolError(BaseModel):
    error: str


router = APIRouter(
    prefix="/v2",
    tags=["Open Inference Protocol (KServe V2)"],
    responses={
        status: {"model": ProtocolError, "description": text}
        for status, text in (
            (400, "The tensors are malformed or do not fit the model."),
            (404, "No model of that name: the models are encoder, decoder and scorer."),
            (413, "Too many rows for one request."),
            (415, "A content type that browsers send across origins: use application/json."),
            (499, "The client closed the connection before sending the whole body; no answer reaches it."),
            (503, "The model is still loading, or the service is at capacity."),
        )
    },
)

BINARY_HEADER = "inference-header-content-length"
CLIENT_CLOSED = 499  # the client went away before its request was read (nginx's status)
SIMPLE_CONTENT_TYPES = {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"}


class V2Error(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _repository(request: Request):
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
    repository = _repository(request)
    if graph not in GRAPHS or model not in {n for n, _ in repository.serving}:
        names = [*GRAPHS, *(f"{m}-{g}" for m in sorted({n for n, _ in repository.serving}) for g in GRAPHS)]
        raise V2Error(f"Unknown model {name!r}; models are {names}.", 404)
    return model, graph


def _version(request: Request, name: str, version: str | None = None):
    """The repository's version behind a protocol model name (the newest ready one unless named), and its graph."""
    model, graph = _split(request, name)
    try:
        return _repository(request).resolve(model, version), graph
    except NotServed as error:
        raise V2Error(error.message, 503 if error.loading else 404) from error


def _metadata(request: Request, name: str, version: str | None = None) -> dict:
    entry, graph = _version(request, name, version)
    declared = entry.inference.model.manifest["files"][graph]
    described = lambda args: [  # noqa: E731
        {"name": n, "datatype": DATATYPE, "shape": tensors.shape(s)} for n, s in args.items()
    ]
    ready = [v for (n, v), e in _repository(request).serving.items() if n == entry.name and e.state == "ready"]
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
    _version(request, name)
    return {"name": name, "ready": True}


@router.get("/models/{name}/versions/{version}/ready", summary="Readiness of one version")
async def version_ready(name: NamePath, version: VersionPath, request: Request):
    """200 when that version takes traffic; 404 when it is unknown, failed or unloaded, 503 while it loads."""
    _version(request, name, version)
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
    try:
        raw = await request.body()
    except ClientDisconnect as error:
        raise V2Error("The client closed the connection before sending the whole body.", CLIENT_CLOSED) from error
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


@router.post("/models/{name}/infer", summary="Run a model on JSON or binary tensors", openapi_extra=INFER_BODY)
async def infer(request: Request, name: NamePath):
    """Run `encoder`, `decoder` or `scorer` (of the newest ready version) on the given tensors (row-major
    `data`, or binary tensor data after the JSON), returning the requested outputs (all by default).
    Class inputs `y` are one-hot rows. Every tensor is FP32."""
    return await _infer(request, name)


@router.post("/models/{name}/versions/{version}/infer", summary="Run one version of a model", openapi_extra=INFER_BODY)
async def infer_version(request: Request, name: NamePath, version: VersionPath):
    """As /v2/models/{name}/infer, on the named version."""
    return await _infer(request, name, version)


async def _infer(request: Request, name: str, version: str | None = None):
    """Parse, run on the version (held until the answer is made, so a swap never stops it) and answer."""
    repository = _repository(request)
    entry, graph = _version(request, name, version)
    repository.hold(entry)
    try:
        return await _run(request, name, entry, graph)
    finally:
        repository.release(entry)


def _check_rows(request: Request, graph: str, sizes: dict[str, int]) -> None:
    """413 when the rows the graph will compute (K x N decoder passes for the scorer) exceed the limit."""
    settings = request.app.state.settings
    setting = "max_work" if graph == "scorer" else "max_samples"
    rows, limit = math.prod(sizes.values()), getattr(settings, setting)
    if rows > limit:
        counted = " x ".join(f"{dim} {size}" for dim, size in sizes.items())
        raise V2Error(
            f"{counted} = {rows} rows exceed the limit {limit} (setting CVAE_{setting.upper()}); "
            "send fewer per request.",
            413,
        )


def _does_not_fit(name: str, declared: dict, inputs) -> V2Error:
    """The protocol's account of tensors that ONNX Runtime refused past every check: the shapes given
    and taken, not ONNX Runtime's own words (those go to the log)."""
    given = ", ".join(f"{t.name} {t.shape}" for t in inputs)
    takes = ", ".join(f"{n} {tensors.dims_text(d)}" for n, d in declared["inputs"].items())
    return V2Error(f"{name} cannot run on {given}: it takes {takes} of {DATATYPE}, each named dimension the same.")


async def _run(request: Request, name: str, entry, graph: str):
    session = entry.inference.model.sessions[graph]
    declared = entry.inference.model.manifest["files"][graph]
    body, binary = await _infer_request(request)
    try:
        sizes = tensors.sizes(declared, body.inputs)
        wanted = tensors.outputs(declared, body)
        _check_rows(request, graph, sizes)
        feeds = tensors.feeds(declared, body.inputs, binary)
    except TensorError as error:
        raise V2Error(str(error)) from error

    async def call(names, part):
        return await asyncio.to_thread(session.run, names, part)

    work = chunks.run(call, declared, wanted, feeds, sizes, request.app.state.settings.score_chunk_rows)
    try:
        values = await request.app.state.admission.run(work)
    except Exception as error:
        if type(error).__module__.startswith("onnxruntime"):
            logging.getLogger(__name__).warning("ONNX Runtime refused %s inputs: %s", name, error)
            raise _does_not_fit(name, declared, body.inputs) from error
        raise
    if not all(np.isfinite(v).all() for v in values):
        raise V2Error("The outputs are not finite: the inputs lie far outside what the model was trained on.")
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
