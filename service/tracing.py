"""OpenTelemetry traces, when CVAE_OTLP_ENDPOINT is set (the `tracing` extra).

The app owns its TracerProvider (never the global one): its spans go in batches to the OTLP
endpoint, the HTTP and gRPC instrumentations make each request's span a child of the caller's
W3C `traceparent`, and the request's handler finds the app's tracer in TRACER, which the app sets
per request. Its children: admission (waiting for a place, then running), the batcher's wait,
each scorer or decoder call, the critic and the out-of-distribution assessment. No span per row,
and no API key in any attribute: only counts, sizes and names.

Tracing off, TRACER holds None, `span` is a shared no-op context, and the
OpenTelemetry SDK and instrumentations are never imported (FastAPI itself imports opentelemetry-api).
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Any

TRACER: ContextVar[Any] = ContextVar("tracer", default=None)  # the app's opentelemetry Tracer, or None
_OFF = contextlib.nullcontext()
TRACER_NAME = "service"
EXTRA = "pip install 'mnist-cvae[tracing]'"


def span(name: str, **attributes):
    """A child span of the current one named `name` with `attributes`, as a context manager; a no-op
    when tracing is off."""
    tracer = TRACER.get()
    if tracer is None:
        return _OFF
    return tracer.start_as_current_span(name, attributes=attributes)


def annotate(**attributes) -> None:
    """Set `attributes` on the current span (the request's, or the innermost child's); a no-op when off."""
    if TRACER.get() is not None:
        from opentelemetry import trace

        trace.get_current_span().set_attributes(attributes)


def provider(settings, exporter=None):
    """The app's TracerProvider: its spans in batches to CVAE_OTLP_ENDPOINT, or to `exporter` (tests
    pass an in-memory one) and then synchronously, so that a test reads them as soon as it is answered."""
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError as error:
        raise RuntimeError(
            f"CVAE_OTLP_ENDPOINT is set but OpenTelemetry is not installed: {EXTRA}, or unset the setting."
        ) from error
    resource = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, as every OpenTelemetry SDK reads
    if resource.attributes.get("service.name", "").startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "mnist-cvae"}))
    traced = TracerProvider(resource=resource)
    if exporter is not None:
        traced.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        traced.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint)))
    return traced


def instrument_http(app, traced) -> None:
    """The FastAPI instrumentation on `app` with the app's provider, and TRACER set for each request."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    tracer = traced.get_tracer(TRACER_NAME)
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=traced,
        exclude_spans=["receive", "send"],  # no span per message of a body
        http_capture_headers_sanitize_fields=["authorization", "x-api-key"],  # were headers captured, never keys
    )
    app.add_middleware(TracerPerRequest, tracer=tracer)


class TracerPerRequest:
    """ASGI middleware: TRACER is the app's tracer while a request is handled."""

    def __init__(self, app, tracer):
        self.app, self.tracer = app, tracer

    async def __call__(self, scope, receive, send):
        token = TRACER.set(self.tracer)
        try:
            await self.app(scope, receive, send)
        finally:
            TRACER.reset(token)


def grpc_interceptor(traced):
    """The aio server interceptor that makes an RPC's span a child of the caller's `traceparent` metadata
    (service.oip.grpc_middleware.TracerPerCall then sets TRACER for its handler)."""
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return aio_server_interceptor(tracer_provider=traced)
