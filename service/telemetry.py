"""What the service tells its operators: Prometheus metrics, OpenTelemetry traces and log lines.

Metrics: one registry per app (`Metrics`), so that several apps can live in one process.

Traces, when CVAE_OTLP_ENDPOINT is set (the `tracing` extra): the app owns its TracerProvider (never
the global one): its spans go in batches to the OTLP endpoint, the HTTP and gRPC instrumentations make
each request's span a child of the caller's W3C `traceparent`, and the request's handler finds the
app's tracer in TRACER, which the app sets per request. Its children: admission (waiting for a place,
then running), the batcher's wait, each scorer or decoder call, the critic and the out-of-distribution
assessment. No span per row, and no API key in any attribute: only counts, sizes and names. Tracing
off, TRACER holds None, `span` is a shared no-op context, and the OpenTelemetry SDK and
instrumentations are never imported (FastAPI itself imports opentelemetry-api).

Logs: lines as JSON objects (or plain text), configured by the entry point (`configure_logs`), never
at import; every line logged while a request runs carries its request_id.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

CLIENT_CLOSED = 499  # the status of a request whose client left before it was answered (as nginx logs it)


class _Versions:
    """The model versions' states and in-flight requests, read from the repository at each scrape."""

    def __init__(self, listing: Callable[[], list[dict]]):
        self.listing = listing

    def collect(self):
        state = GaugeMetricFamily(
            "cvae_model_version_state",
            "1 for each model version, labelled with its state (loading, ready, failed, unloading, unloaded)",
            labels=["name", "version", "state"],
        )
        flight = GaugeMetricFamily(
            "cvae_model_version_in_flight", "Requests running on each model version", labels=["name", "version"]
        )
        for row in self.listing():
            state.add_metric([row["model"], row["version"], row["state"]], 1)
            flight.add_metric([row["model"], row["version"]], row["in_flight"])
        yield state
        yield flight


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._versions: _Versions | None = None
        self.requests = Counter(
            "cvae_requests", "HTTP requests answered", ["endpoint", "method", "status"], registry=self.registry
        )
        self.errors = Counter(
            "cvae_errors", "HTTP answers with a 4xx or 5xx status", ["endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "cvae_request_seconds",
            "Time from request to response",
            ["endpoint"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "cvae_batch_images",
            "Images per request (scored, classified, encoded or sampled)",
            ["endpoint"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=self.registry,
        )

        self.rejected = Counter(
            "cvae_rejected",
            "Requests refused for capacity (503) or timed out (504)",
            ["reason"],
            registry=self.registry,
        )
        self.model_batch = Histogram(
            "cvae_model_batch_passes",
            "Decoder rows (x K for the scorer) per batched model call",
            ["graph"],
            buckets=(1, 10, 100, 1000, 5000, 10000, 20000, 50000),
            registry=self.registry,
        )
        self.callers_refused = Counter(
            "cvae_caller_refused",
            "Requests refused (429) past their caller's share or rate, by caller (key-N; 'address' without keys)",
            ["caller", "reason"],
            registry=self.registry,
        )
        self.model_passes = Counter(
            "cvae_model_passes",
            "Decoder rows (x K for the scorer) computed, batched or not",
            ["graph"],
            registry=self.registry,
        )

    def watch_versions(self, listing: Callable[[], list[dict]]) -> None:
        """Export the states of the model versions that `listing` returns (GET /v1/models' rows)."""
        if self._versions is None:
            self._versions = _Versions(listing)
            self.registry.register(self._versions)
        self._versions.listing = listing  # an app started again reports its new repository

    def observe_refused_caller(self, caller: str, reason: str) -> None:
        """A 429; callers known by address are counted together, so that no address becomes a label."""
        self.callers_refused.labels(caller if caller.startswith("key-") else "address", reason).inc()

    def observe_model_call(self, graph: str, size: int, batched: bool) -> None:
        """A model call of `size` decoder rows, run in a batch of concurrent calls or on its own."""
        self.model_passes.labels(graph).inc(size)
        if batched:
            self.model_batch.labels(graph).observe(size)

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """Count a request; one its client closed (CLIENT_CLOSED) got no answer, so it is no error answer."""
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        if status >= 400 and status != CLIENT_CLOSED:
            self.errors.labels(endpoint, str(status)).inc()


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


REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)  # set by middleware.RequestContext

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """One plain line: time, level, logger, message, then the record's fields as key=value."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in record.__dict__.items() if k not in _STANDARD)
        return super().format(record) + (" " + fields if fields else "")


class RequestIdFilter(logging.Filter):
    """Give a record logged while a request runs that request's id, unless it names one itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = REQUEST_ID.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
        return True


def configure_logs(log_format: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
