"""Inference over the Open Inference Protocol: POST /v2/models/{name}[/versions/{version}]/infer, with
JSON tensors or the binary tensor data extension, checked against the manifest and the limits before
any data is read, and run in chunks of CVAE_SCORE_CHUNK_ROWS rows (service.protocol.run, as over gRPC)."""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from service import protocol, tensors
from service.protocol import V2Error
from service.routes.openapi import LIMITED
from service.routes.v2 import BINARY_HEADER, RESPONSES, SIMPLE_CONTENT_TYPES, TAGS, NamePath, VersionPath
from service.tensors import InferRequest

router = APIRouter(prefix="/v2", tags=TAGS, responses=RESPONSES)


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
