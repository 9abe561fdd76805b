"""What every gRPC call passes before the servicer, as middleware.py is for HTTP: its API key, checked
as HTTP's are, one log line with its request id, and, when traced, the app's tracer (service.telemetry)."""

from __future__ import annotations

import logging
import time

import grpc

from service.operations.admission import CALLER, given_key, request_id_of, which_key
from service.telemetry import REQUEST_ID, TRACER

log = logging.getLogger("cvae.errors")


def _metadata(details) -> dict[bytes, bytes]:
    """A call's metadata as HTTP headers are read: lower-case names to bytes."""
    return {k.lower().encode(): v if isinstance(v, bytes) else v.encode() for k, v in details.invocation_metadata or ()}


def _handler(behaviour, like):
    """A method handler of `behaviour`, of the same kind and messages as the handler `like`."""
    kind = grpc.stream_stream_rpc_method_handler if like.request_streaming else grpc.unary_unary_rpc_method_handler
    return kind(behaviour, like.request_deserializer, like.response_serializer)


class TracerPerCall(grpc.aio.ServerInterceptor):
    """TRACER is the app's `tracer` while a call is handled: each call is a task of its own, so the
    setting ends with it."""

    def __init__(self, tracer):
        self.tracer = tracer

    async def intercept_service(self, continuation, details):
        TRACER.set(self.tracer)
        return await continuation(details)


class KeyCheck(grpc.aio.ServerInterceptor):
    """Require one of `keys` (metadata `authorization: Bearer KEY` or `x-api-key: KEY`) on every method
    but those in `open_methods`; every key is compared in constant time, and never logged."""

    def __init__(self, keys: list[str], open_methods: set[str]):
        self.keys = [key.encode() for key in keys]
        self.open_methods = open_methods

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return handler
        if not self.keys or details.method in self.open_methods:
            return _as(None, handler)
        given = given_key(_metadata(details))
        index = which_key(self.keys, given) if given else None
        if not given:
            code = grpc.StatusCode.UNAUTHENTICATED
            message = "An API key is required: send the metadata 'authorization: Bearer KEY' or 'x-api-key: KEY'."
        elif index is None:
            code = grpc.StatusCode.PERMISSION_DENIED
            message = "The API key is not valid; check it with whoever runs this service."
        else:
            return _as(f"key-{index + 1}", handler)

        async def refuse(request, context):
            await context.abort(code, message)

        return _handler(refuse, handler)


def _as(caller: str | None, handler):
    """`handler` run as `caller` (None: the peer's address), the one whose share and rate admission counts."""
    if handler.request_streaming:  # no streaming method is served (they answer UNIMPLEMENTED)
        return handler
    behaviour = handler.unary_unary

    async def as_caller(request, context):
        # a peer reads "ipv4:HOST:PORT" or "ipv6:[HOST]:PORT": the caller is the host
        token = CALLER.set(caller or context.peer().partition(":")[2].rpartition(":")[0] or "unknown")
        try:
            return await behaviour(request, context)
        finally:
            CALLER.reset(token)

    return _handler(as_caller, handler)


class AccessLog(grpc.aio.ServerInterceptor):
    """Give every unary call an id (metadata x-request-id, or a new one) and log one line per call, as
    middleware.RequestContext does per HTTP request: id, method, path, status (the gRPC code's name),
    latency, and for a refusal its message; never the tensors or the metadata. An unexpected error is
    logged with its traceback under the id."""

    def __init__(self, logger: logging.Logger):
        self.log = logger

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or handler.request_streaming:
            return handler
        request_id = request_id_of(_metadata(details).get(b"x-request-id", b"").decode("latin-1"))
        where = {"request_id": request_id, "method": "gRPC", "path": details.method}
        behaviour = handler.unary_unary

        async def logged(request, context):
            token = REQUEST_ID.set(request_id)
            start = time.perf_counter()
            code = None
            try:
                return await behaviour(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception:
                log.exception("unexpected error", extra=where)
                code = grpc.StatusCode.UNKNOWN
                raise
            finally:
                code = code or context.code() or grpc.StatusCode.OK
                failed = code != grpc.StatusCode.OK
                self.log.info(
                    "request",
                    extra={
                        **where,
                        "status": code.name,
                        "latency_ms": round((time.perf_counter() - start) * 1000, 3),
                        **({"error": str(context.details())[:300]} if failed and context.details() else {}),
                    },
                )
                REQUEST_ID.reset(token)

        return _handler(logged, handler)
