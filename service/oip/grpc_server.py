"""The Open Inference Protocol (KServe V2) over gRPC, beside HTTP when CVAE_GRPC_PORT is set: the same
graphs, names, checks, limits, chunks and admission as /v2 (service.oip.protocol), with the messages and
servicer that tritonclient.grpc ships. This module is gRPC: messages in and out, and status codes.

Tensors come as raw_input_contents (one little-endian FP32 buffer per input, what Triton's clients
send) or as contents.fp32_contents, and go back as raw_output_contents. API keys, when set, come as
the metadata `authorization: Bearer KEY` or `x-api-key: KEY`; ServerLive and ServerReady are open,
as /v2/health is. Codes, as Triton uses them: a bad request (400) is INVALID_ARGUMENT, and so is too
much work for one request (413), since only a smaller request succeeds (Triton refuses a batch over
its max_batch_size the same way; RESOURCE_EXHAUSTED would tell clients a retry may pass); an unknown
model or version NOT_FOUND, loading or at capacity (503) UNAVAILABLE, past the request timeout (504)
DEADLINE_EXCEEDED, a version that fails its checks on load (409) FAILED_PRECONDITION, no key
UNAUTHENTICATED, a wrong key or closed model control PERMISSION_DENIED; a message over
CVAE_MAX_BODY_BYTES is RESOURCE_EXHAUSTED, gRPC's own refusal.
"""

from __future__ import annotations

import functools
import logging
import math

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from service import telemetry
from service.failures import NotServed, Overloaded, RequestTimeout, V2Error
from service.oip import protocol
from service.oip.grpc_middleware import AccessLog, KeyCheck, TracerPerCall
from service.oip.tensors import DATATYPE, LITTLE_ENDIAN_FP32, InferRequest, RequestedOutput, Tensor
from service.operations.versions import is_ready, not_found, served_version, version_key

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
OPEN_METHODS = {f"/{SERVICE.full_name}/{name}" for name in ("ServerLive", "ServerReady")}
CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}


def _answered(rpc):
    """The RPC with the service's errors as gRPC status codes and their messages."""

    @functools.wraps(rpc)
    async def answered(self, request, context):
        try:
            return await rpc(self, request, context)
        except V2Error as error:
            code, message = CODES.get(error.status, grpc.StatusCode.INTERNAL), error.message
        except NotServed as error:
            code, message = grpc.StatusCode.UNAVAILABLE if error.loading else grpc.StatusCode.NOT_FOUND, error.message
        except Overloaded as error:
            self.state.metrics.rejected.labels("overloaded").inc()
            code, message = grpc.StatusCode.UNAVAILABLE, f"The service is at capacity ({error}); retry shortly."
        except RequestTimeout as error:
            self.state.metrics.rejected.labels("timeout").inc()
            code, message = grpc.StatusCode.DEADLINE_EXCEEDED, str(error)
        await context.abort(code, message)

    return answered


def _infer_request(request: pb.ModelInferRequest) -> tuple[InferRequest, bytes]:
    """The protocol's request and binary tensor data of a ModelInferRequest: each FP32 input's values,
    from raw_input_contents or contents.fp32_contents, as little-endian bytes in the order of the inputs."""
    raw = request.raw_input_contents
    if not request.inputs:
        raise V2Error("The request has no inputs; send the model's inputs (ModelMetadata lists them).")
    if raw and len(raw) != len(request.inputs):
        raise V2Error(
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: send one per input, in their order, "
            "or none and each input's contents.fp32_contents."
        )
    inputs, parts = [], []
    for i, tensor in enumerate(request.inputs):
        if raw and tensor.HasField("contents"):
            raise V2Error(f"Input {tensor.name!r} has both contents and raw_input_contents; send one.")
        if raw:
            data, field = raw[i], f"raw_input_contents[{i}]"
        elif tensor.HasField("contents"):
            data = np.asarray(tensor.contents.fp32_contents, LITTLE_ENDIAN_FP32).tobytes()
            field = "contents.fp32_contents"
        else:
            data, field = b"", None
        needed = math.prod(tensor.shape) * LITTLE_ENDIAN_FP32.itemsize
        if tensor.datatype == DATATYPE and (field is None or len(data) != needed):
            given = f"{field} hold {len(data)} bytes" if field else "neither contents nor raw_input_contents"
            raise V2Error(f"Input {tensor.name!r} has {given}; shape {list(tensor.shape)} of FP32 needs {needed}.")
        parameters = {"binary_data_size": len(data)}
        inputs.append(
            Tensor(name=tensor.name, shape=list(tensor.shape), datatype=tensor.datatype, parameters=parameters)
        )
        parts.append(data)
    outputs = [RequestedOutput(name=output.name) for output in request.outputs] or None
    return InferRequest(id=request.id or None, inputs=inputs, outputs=outputs), b"".join(parts)


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The RPCs of the protocol that this service answers, on the app's state; the others are UNIMPLEMENTED."""

    def __init__(self, app):
        self.app, self.state = app, app.state

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=is_ready(self.app))

    async def ServerMetadata(self, request, context):
        version = served_version(self.app) or self.app.version
        return pb.ServerMetadataResponse(name=protocol.SERVER_NAME, version=version)

    @_answered
    async def ModelMetadata(self, request, context):
        meta = protocol.metadata(self.state, request.name, request.version or None)
        described = lambda tensors: [pb.ModelMetadataResponse.TensorMetadata(**t) for t in tensors]  # noqa: E731
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=described(meta["inputs"]),
            outputs=described(meta["outputs"]),
        )

    @_answered
    async def ModelReady(self, request, context):
        """Ready or not (loading); NOT_FOUND for an unknown model or version."""
        try:
            protocol.graph_version(self.state, request.name, request.version or None)
        except V2Error as error:
            if error.status != 503:
                raise
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @_answered
    async def ModelInfer(self, request, context):
        name = request.model_name
        with protocol.held(self.state, name, request.model_version or None) as (entry, graph):
            body, binary = _infer_request(request)
            wanted, values = await protocol.run(self.state, name, entry, graph, body, binary)
        return pb.ModelInferResponse(
            model_name=name,
            model_version=entry.version,
            id=request.id,
            outputs=[
                pb.ModelInferResponse.InferOutputTensor(name=n, datatype=DATATYPE, shape=v.shape)
                for n, v in zip(wanted, values)
            ],
            raw_output_contents=[np.ascontiguousarray(v, LITTLE_ENDIAN_FP32).tobytes() for v in values],
        )

    @_answered
    async def RepositoryModelLoad(self, request, context):
        """As POST /v1/models/{name}/versions/{version}/load: the version of parameters["version"] (a
        string), else the newest one on disk, of the repository's model `model_name` (e.g. mnist-cvae)."""
        repository = self._control()
        name, version = request.model_name, _version(request)
        if version is None:
            found = repository.discover()
            versions = [v for n, v in found if n == name]
            if not versions:
                raise not_found(name, None, found, repository.unserved, "name")
            version = max(versions, key=version_key)
        entry = await repository.load(name, version)
        if entry.state == "failed":
            raise V2Error(f"Model {name!r} version {version!r} failed its checks: {entry.reason}", 409)
        return pb.RepositoryModelLoadResponse()

    @_answered
    async def RepositoryModelUnload(self, request, context):
        """As POST /v1/models/{name}/versions/{version}/unload: the version of parameters["version"], else
        every version of the model that serves."""
        repository = self._control()
        name, version = request.model_name, _version(request)
        versions = [version] if version is not None else [v for n, v in repository.serving if n == name]
        if not versions:
            raise not_found(name, None, repository.serving, repository.unserved, "name")
        for each in versions:
            await repository.unload(name, each)
        return pb.RepositoryModelUnloadResponse()

    def _control(self):
        """The repository, once model control is open (as for /v1's load and unload)."""
        closed = self.state.settings.control_closed
        if closed:
            raise V2Error(closed, 403)
        return protocol.repository_of(self.state)


def _version(request) -> str | None:
    parameter = request.parameters.get("version")
    return parameter.string_param if parameter is not None and parameter.string_param else None


SERVED = [method.name for method in SERVICE.methods if method.name in InferenceServicer.__dict__]


def _unimplemented(name: str):
    async def rpc(self, request, context):
        served = ", ".join(SERVED)
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not served; this service answers {served}.")

    return rpc


for _method in SERVICE.methods:  # the generated servicer's stand-ins are not coroutines: replace them
    if _method.name not in SERVED:
        setattr(InferenceServicer, _method.name, _unimplemented(_method.name))


async def start(app, settings) -> grpc.aio.Server:
    """The gRPC server on settings.host and settings.grpc_port, started, answering from `app`'s state;
    its messages are limited as HTTP bodies are (CVAE_MAX_BODY_BYTES)."""
    traced = app.state.tracer_provider  # None unless traced: then a call's span joins its caller's trace first
    tracers = (
        [telemetry.grpc_interceptor(traced), TracerPerCall(traced.get_tracer(telemetry.TRACER_NAME))] if traced else []
    )
    server = grpc.aio.server(
        interceptors=[
            *tracers,
            AccessLog(logging.getLogger("cvae.access")),
            KeyCheck(settings.api_key_list, OPEN_METHODS),
        ],
        options=[("grpc.max_receive_message_length", settings.max_body_bytes)],
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(app), server)
    address = f"{settings.host}:{settings.grpc_port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as error:
        raise RuntimeError(f"gRPC cannot listen on {address}: free the port or set another CVAE_GRPC_PORT.") from error
    await server.start()
    logging.getLogger("cvae.grpc").info("Open Inference Protocol over gRPC on %s", address)
    return server
