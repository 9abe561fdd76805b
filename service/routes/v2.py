"""The Open Inference Protocol (KServe V2) over HTTP/REST for the three graphs, with JSON tensors
and the binary tensor data extension (what Triton's clients send by default).

Models: `encoder` (x [N,784], y [N,10] one-hot -> mu, logvar), `decoder` (z [N,D], y -> logits)
and `scorer` (x, y, eps [K,N,D] -> log_w, log_px_z [K,N], kl [N]), exactly as in the manifest.

Binary tensor data: the body is the JSON request of `Inference-Header-Content-Length` bytes, then
the raw little-endian data of each input that says `"parameters": {"binary_data_size": n}`, in the
order of the inputs. An output comes back the same way when its request says
`"parameters": {"binary_data": true}`, or every output when the request's parameters say
`"binary_data_output": true`.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError

from service.repository import NotServed, is_ready, version_key
from service.runtime import GRAPHS


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
            (503, "The model is still loading, or the service is at capacity."),
        )
    },
)

DATATYPE = "FP32"  # every tensor of the three graphs
LITTLE_ENDIAN_FP32 = np.dtype("<f4")
BINARY_HEADER = "inference-header-content-length"
SIMPLE_CONTENT_TYPES = {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"}
MAX_ELEMENTS = 50_000_000


class Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = Field(None, description="Row-major values; omit when the tensor is sent as binary data.")


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[Tensor] = Field(..., min_length=1)
    outputs: list[RequestedOutput] | None = None


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


def _shape(dims) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in dims]


def _metadata(request: Request, name: str, version: str | None = None) -> dict:
    entry, graph = _version(request, name, version)
    declared = entry.inference.model.manifest["files"][graph]
    tensors = lambda args: [{"name": n, "datatype": DATATYPE, "shape": _shape(s)} for n, s in args.items()]  # noqa: E731
    ready = [v for (n, v), e in _repository(request).serving.items() if n == entry.name and e.state == "ready"]
    return {
        "name": name,
        "versions": sorted(ready, key=version_key),
        "platform": "onnxruntime_onnx",
        "inputs": tensors(declared["inputs"]),
        "outputs": tensors(declared["outputs"]),
    }


def _binary_size(parameters: dict | None) -> int | None:
    size = (parameters or {}).get("binary_data_size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise V2Error(f"binary_data_size must be a byte count, not {size!r}.")
    return size


def _array(tensor: Tensor, binary: memoryview, offset: int) -> tuple[np.ndarray, int]:
    """One input's values in its shape, and the offset of the next input's binary data."""
    size = _binary_size(tensor.parameters)
    count = math.prod(tensor.shape)
    if size is not None:
        if tensor.data is not None:
            raise V2Error(f"Input {tensor.name!r} has both data and binary_data_size; send one.")
        if size != count * LITTLE_ENDIAN_FP32.itemsize:
            raise V2Error(
                f"Input {tensor.name!r} has binary_data_size {size}; shape {tensor.shape} of FP32 needs "
                f"{count * LITTLE_ENDIAN_FP32.itemsize} bytes."
            )
        if offset + size > len(binary):
            raise V2Error(f"The binary data end before input {tensor.name!r}'s {size} bytes.")
        array = np.frombuffer(binary[offset : offset + size], dtype=LITTLE_ENDIAN_FP32).astype(np.float32)
        return array.reshape(tensor.shape), offset + size
    if tensor.data is None:
        raise V2Error(f"Input {tensor.name!r} has neither data nor parameters.binary_data_size.")
    try:
        return np.asarray(tensor.data, dtype=np.float32).reshape(tensor.shape), offset
    except (ValueError, TypeError, OverflowError) as error:
        problem = f"Input {tensor.name!r}: data do not fill shape {tensor.shape} with numbers ({error})."
        raise V2Error(problem) from error


def _feeds(entry: dict, inputs: list[Tensor], binary: bytes) -> dict[str, np.ndarray]:
    expected = {n: _shape(s) for n, s in entry["inputs"].items()}
    given = {t.name: t for t in inputs}
    if len(given) < len(inputs):
        raise V2Error(f"Inputs name {[t.name for t in inputs]}: each input may appear once.")
    missing, unknown = set(expected) - set(given), set(given) - set(expected)
    if missing or unknown:
        raise V2Error(
            f"Inputs must be exactly {sorted(expected)}; missing {sorted(missing)}, unknown {sorted(unknown)}."
        )
    feeds, offset, data = {}, 0, memoryview(binary)
    for tensor in inputs:  # binary data follow the order of the inputs
        name = tensor.name
        if tensor.datatype != DATATYPE:
            raise V2Error(
                f"Input {name!r} has datatype {tensor.datatype}; this model takes {DATATYPE} "
                "(convert it, e.g. array.astype(numpy.float32))."
            )
        want = expected[name]
        if len(tensor.shape) != len(want) or any(w not in (-1, s) for w, s in zip(want, tensor.shape)):
            raise V2Error(f"Input {name!r} has shape {tensor.shape}; this model takes {want} (-1: any size).")
        if any(s < 1 for s in tensor.shape) or math.prod(tensor.shape) > MAX_ELEMENTS:
            raise V2Error(f"Input {name!r} has an empty or too large shape {tensor.shape}.")
        array, offset = _array(tensor, data, offset)
        if not np.isfinite(array).all():
            raise V2Error(f"Input {name!r} holds NaN or infinite values.")
        feeds[name] = array
    if offset != len(binary):
        raise V2Error(f"{len(binary) - offset} bytes of binary data belong to no input's binary_data_size.")
    return feeds


def install(app) -> None:
    @app.exception_handler(V2Error)
    async def v2_error(request: Request, exc: V2Error) -> JSONResponse:
        return _error(exc.message, exc.status)


@router.get("", summary="Server metadata")
async def server_metadata(request: Request):
    """Name, version and protocol extensions of this server."""
    return {"name": "mnist-cvae", "version": request.app.version, "extensions": ["binary_tensor_data"]}


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
    raw = await request.body()
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


def _binary_outputs(body: InferRequest, wanted: list[str]) -> set[str]:
    """The outputs to send as binary data: asked for one by one, or all by the request's parameters."""
    every = bool((body.parameters or {}).get("binary_data_output", False))
    asked = {o.name: (o.parameters or {}).get("binary_data") for o in body.outputs or []}
    return {name for name in wanted if (asked.get(name) if asked.get(name) is not None else every)}


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


async def _run(request: Request, name: str, entry, graph: str):
    session = entry.inference.model.sessions[graph]
    body, binary = await _infer_request(request)
    feeds = _feeds(entry.inference.model.manifest["files"][graph], body.inputs, binary)
    names = [a.name for a in session.get_outputs()]
    wanted = [o.name for o in body.outputs] if body.outputs else names
    unknown = [o for o in wanted if o not in names]
    if unknown:
        raise V2Error(f"Unknown outputs {unknown}; {name} gives {names}.")
    settings = request.app.state.settings
    rows = next(iter(feeds.values())).shape[0] if graph != "scorer" else int(np.prod(feeds["eps"].shape[:2]))
    limit = settings.max_samples if graph != "scorer" else settings.max_work
    if rows > limit:
        raise V2Error(f"{rows} rows (K x N for the scorer) exceed the limit {limit}; send fewer per request.", 413)
    try:
        values = await request.app.state.admission.run(asyncio.to_thread(session.run, wanted, feeds))
    except Exception as error:
        if type(error).__module__.startswith("onnxruntime"):
            raise V2Error(f"The tensors do not fit together: {error}") from error
        raise
    if not all(np.isfinite(v).all() for v in values):
        raise V2Error("The outputs are not finite: the inputs lie far outside what the model was trained on.")
    as_binary = _binary_outputs(body, wanted)

    def encode() -> tuple[list[dict], bytes]:
        tensors, chunks = [], []
        for n, v in zip(wanted, values):
            tensor = {"name": n, "datatype": DATATYPE, "shape": list(v.shape)}
            if n in as_binary:
                chunk = np.ascontiguousarray(v, dtype=LITTLE_ENDIAN_FP32).tobytes()
                tensor["parameters"] = {"binary_data_size": len(chunk)}
                chunks.append(chunk)
            else:
                tensor["data"] = v.astype(np.float32).ravel().tolist()
            tensors.append(tensor)
        return tensors, b"".join(chunks)

    outputs, data = await asyncio.to_thread(encode)
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
