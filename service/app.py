"""create_app(): the FastAPI application, serving the versions of a model repository (and over gRPC too,
when CVAE_GRPC_PORT is set)."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service import telemetry
from service.engine.inference import Inference
from service.http import docs, errors, health, models, openapi, page, sampling, scoring
from service.http.middleware import ApiKeyAuth, BodyLimit, CancelAbandoned, RequestContext
from service.oip import rest
from service.operations.admission import Admission
from service.operations.repository import Repository
from service.settings import Settings, get_settings
from service.telemetry import Metrics

DESCRIPTION = """
A class-conditional variational autoencoder of MNIST digits, served with ONNX Runtime.

p(x) = sum_y p(y) integral p(x|z,y) p(z) dz with p(z) = N(0, I) and a Bernoulli likelihood on
binary 28x28 pixels. Sample from it, encode images, estimate log p(x) by importance sampling, and
classify by Bayes' rule p(y|x) = p(x|y) p(y) / p(x).

Errors are JSON: `{"error": "...", "problems": [{"field": "...", "message": "..."}]}`.
"""


TAGS = [
    {"name": "sampling", "description": "Draw images from p(x), p(x|y) or p(x|z,y), and walk the latent space."},
    {"name": "scoring", "description": "log p(x), p(y|x) and q(z|x,y) of your images, with their uncertainty."},
    {"name": "model", "description": "What is served: sizes, classes, metrics, limits, execution providers."},
    {"name": "health", "description": "Liveness, readiness and Prometheus metrics."},
    {
        "name": "Open Inference Protocol (KServe V2)",
        "description": "The raw ONNX graphs over the KServe V2 / Triton protocol (JSON and binary tensors).",
    },
]


def create_app(settings: Settings | None = None, span_exporter=None) -> FastAPI:
    """The service; traced when CVAE_OTLP_ENDPOINT is set, or to `span_exporter` (an OpenTelemetry
    SpanExporter: tests pass an in-memory one)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Integrity and shape checks run here: start-up fails when the default model cannot be served.
        repository = Repository(
            settings, partial(Inference.open, settings=settings, on_call=app.state.metrics.observe_model_call)
        )
        app.state.repository = repository
        await repository.start()
        app.state.metrics.watch_versions(repository.listing)
        grpc = None
        if settings.grpc_port is not None:
            from service.oip import grpc_server  # grpc and its messages are imported only when served

            grpc = await grpc_server.start(app, settings)
        yield
        if grpc is not None:
            await grpc.stop(settings.shutdown_grace_s)  # its running calls finish first, as HTTP's do
        app.state.repository = None
        await repository.stop()
        if app.state.tracer_provider is not None:
            app.state.tracer_provider.shutdown()  # the last spans are sent

    app = FastAPI(
        title="MNIST CVAE service",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by service.http.docs from installed files, not from a CDN
        redoc_url=None,
        openapi_url=None,  # service.http.docs serves it as a route of its own
        openapi_tags=TAGS,
    )
    app.openapi = lambda: openapi.document(app, keys_required=bool(settings.api_key_list))
    app.state.settings = settings
    app.state.repository = None
    app.state.metrics = Metrics()
    app.state.admission = Admission(
        settings.max_in_flight,
        settings.request_timeout_s,
        settings.max_running,
        settings.caller_share,
        settings.caller_rate,
    )
    errors.install(app)
    app.include_router(health.router)
    app.include_router(page.router)
    app.include_router(docs.router)
    app.include_router(sampling.router)
    app.include_router(scoring.router)
    app.include_router(models.router)
    app.include_router(rest.router)
    rest.install(app)
    # Added innermost first: a request meets RequestContext, CORS, ApiKeyAuth, BodyLimit, CancelAbandoned.
    app.add_middleware(CancelAbandoned)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(ApiKeyAuth, keys=settings.api_key_list)
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST"],
            allow_headers=[
                *("Authorization", "X-API-Key", "Content-Type", "X-Request-ID"),
                "Inference-Header-Content-Length",  # binary tensors on /v2
            ],
            expose_headers=[
                *("X-Request-ID", "X-Seed", "Inference-Header-Content-Length", "Retry-After"),
                *("X-Model-Name", "X-Model-Version"),  # which version answered
            ],
        )
    app.add_middleware(RequestContext, logger=logging.getLogger("cvae.access"), metrics=app.state.metrics)
    app.state.tracer_provider = None
    if settings.otlp_endpoint or span_exporter is not None:
        app.state.tracer_provider = telemetry.provider(settings, span_exporter)
        telemetry.instrument_http(app, app.state.tracer_provider)
    return app
