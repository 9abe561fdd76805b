"""The Open Inference Protocol (KServe V2) over HTTP/REST, JSON tensors, for the three graphs.

Models: `encoder` (x [N,784], y [N,10] one-hot -> mu, logvar), `decoder` (z [N,D], y -> logits)
and `scorer` (x, y, eps [K,N,D] -> log_w, log_px_z [K,N], kl [N]), exactly as in the manifest.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from service.inference import ready_inference
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
            (503, "The model is still loading, or the service is at capacity."),
        )
    },
)

DATATYPES = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64}


class Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any]


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


def _model(request: Request):
    inference = ready_inference(request.app)
    if inference is None:
        raise V2Error("The model is still loading; retry shortly.", 503)
    return inference.model


def _graph(request: Request, name: str):
    if name not in GRAPHS:
        raise V2Error(f"Unknown model {name!r}; models are {list(GRAPHS)}.", 404)
    return _model(request).sessions[name]


def _version(request: Request) -> str:
    return str(_model(request).manifest.get("version", "1"))


def _shape(dims) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in dims]


def _metadata(request: Request, name: str) -> dict:
    session = _graph(request, name)
    tensors = lambda args: [{"name": a.name, "datatype": "FP32", "shape": _shape(a.shape)} for a in args]  # noqa: E731
    return {
        "name": name,
        "versions": [_version(request)],
        "platform": "onnxruntime_onnx",
        "inputs": tensors(session.get_inputs()),
        "outputs": tensors(session.get_outputs()),
    }


def _feeds(session, inputs: list[Tensor]) -> dict[str, np.ndarray]:
    expected = {a.name: _shape(a.shape) for a in session.get_inputs()}
    given = {t.name: t for t in inputs}
    missing, unknown = set(expected) - set(given), set(given) - set(expected)
    if missing or unknown:
        raise V2Error(
            f"Inputs must be exactly {sorted(expected)}; missing {sorted(missing)}, unknown {sorted(unknown)}."
        )
    feeds = {}
    for name, tensor in given.items():
        if tensor.datatype not in DATATYPES:
            raise V2Error(f"Input {name!r} has datatype {tensor.datatype}; send FP32.")
        want = expected[name]
        if len(tensor.shape) != len(want) or any(w not in (-1, s) for w, s in zip(want, tensor.shape)):
            raise V2Error(f"Input {name!r} has shape {tensor.shape}; this model takes {want} (-1: any size).")
        if any(s < 1 for s in tensor.shape) or int(np.prod(tensor.shape)) > 50_000_000:
            raise V2Error(f"Input {name!r} has an empty or too large shape {tensor.shape}.")
        try:
            array = np.asarray(tensor.data, dtype=np.float32).reshape(tensor.shape)
        except (ValueError, TypeError, OverflowError) as error:
            raise V2Error(f"Input {name!r}: data do not fill shape {tensor.shape} with numbers ({error}).") from error
        if not np.isfinite(array).all():
            raise V2Error(f"Input {name!r} holds NaN or infinite values.")
        feeds[name] = array
    return feeds


def install(app) -> None:
    @app.exception_handler(V2Error)
    async def v2_error(request: Request, exc: V2Error) -> JSONResponse:
        return _error(exc.message, exc.status)


@router.get("", summary="Server metadata")
async def server_metadata(request: Request):
    """Name, version and protocol extensions of this server."""
    return {"name": "mnist-cvae", "version": request.app.version, "extensions": []}


@router.get("/health/live", summary="Server liveness")
async def live():
    """200 while the process runs."""
    return {"live": True}


@router.get("/health/ready", summary="Server readiness")
async def ready(request: Request):
    """200 once the model is loaded and warmed up; 503 before."""
    if request.app.state.ready:
        return {"ready": True}
    return _error("The model is still loading.", 503)


@router.get("/models/{name}", summary="Model metadata: input and output tensors")
async def model_metadata(name: str, request: Request):
    """Inputs and outputs of `encoder`, `decoder` or `scorer`, with datatypes and shapes (-1: any size)."""
    return _metadata(request, name)


@router.get("/models/{name}/ready", summary="Model readiness")
async def model_ready(name: str, request: Request):
    """200 when the model can answer; 404 for an unknown model."""
    _graph(request, name)
    return {"name": name, "ready": True}


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


async def _infer_request(request: Request) -> InferRequest:
    """The JSON inference header, whatever the content type (Triton's clients send octet-stream)."""
    raw = await request.body()
    header_length = request.headers.get("inference-header-content-length")
    if header_length is not None and header_length.isdigit() and int(header_length) < len(raw):
        raise V2Error("Binary tensor data is not supported: send JSON tensors (binary_data=False).")
    try:
        return InferRequest.model_validate_json(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise V2Error(f"Invalid inference request at {where}: {first.get('msg')}.") from error


@router.post(
    "/models/{name}/infer",
    summary="Run a model on JSON tensors",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline(InferRequest.model_json_schema())}},
        }
    },
)
async def infer(name: str, request: Request):
    """Run `encoder`, `decoder` or `scorer` on the given tensors (row-major `data`), returning the
    requested outputs (all by default). Class inputs `y` are one-hot rows."""
    session = _graph(request, name)
    body = await _infer_request(request)
    feeds = _feeds(session, body.inputs)
    names = [a.name for a in session.get_outputs()]
    wanted = [o.name for o in body.outputs] if body.outputs else names
    unknown = [o for o in wanted if o not in names]
    if unknown:
        raise V2Error(f"Unknown outputs {unknown}; {name} gives {names}.")
    settings = request.app.state.settings
    rows = next(iter(feeds.values())).shape[0] if name != "scorer" else int(np.prod(feeds["eps"].shape[:2]))
    limit = settings.max_samples if name != "scorer" else settings.max_work
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

    def tensors() -> list[dict]:
        return [
            {"name": n, "datatype": "FP32", "shape": list(v.shape), "data": v.astype(np.float32).ravel().tolist()}
            for n, v in zip(wanted, values)
        ]

    outputs = await asyncio.to_thread(tensors)
    answer = {"model_name": name, "model_version": _version(request), "outputs": outputs}
    if body.id is not None:
        answer["id"] = body.id
    return answer
