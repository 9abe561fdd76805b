"""OpenTelemetry traces (CVAE_OTLP_ENDPOINT): a request's spans join the caller's trace, over HTTP and
gRPC, with admission, the model calls, the critic and the assessment as children; tracing off, none."""

import http.server
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient
from servers import free_port, wait_ready

from service import telemetry
from service.app import create_app
from service.settings import Settings

pytest.importorskip("opentelemetry.sdk")
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
KEY = {"x-api-key": "secret-key"}


def digit() -> list[list[float]]:
    return (np.random.default_rng(0).random((28, 28)) > 0.8).astype(float).tolist()


def classify_body() -> dict:
    return {"images": [digit(), digit()], "num_samples": 64, "seed": 3}


def by_name(spans) -> dict[str, list]:
    named: dict[str, list] = {}
    for span in spans:
        named.setdefault(span.name, []).append(span)
    return named


def instrumented(app) -> bool:
    """Whether the FastAPI instrumentation or the app's tracer is on `app`."""
    with_tracer = any(m.cls is telemetry.TracerPerRequest for m in app.user_middleware)
    return with_tracer or getattr(app, "_is_instrumented_by_opentelemetry", False)


def test_a_classify_request_joins_the_callers_trace_with_its_children(shipped_model, monkeypatch):
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    exporter = InMemorySpanExporter()
    app = create_app(Settings(model_dir=shipped_model, api_keys="secret-key"), span_exporter=exporter)
    assert instrumented(app)
    with TestClient(app) as client:
        wait_ready(client)
        exporter.clear()
        headers = {"traceparent": TRACEPARENT, "Authorization": "Bearer secret-key"}
        answer = client.post("/v1/classify", json=classify_body(), headers=headers)
        assert answer.status_code == 200
    spans = exporter.get_finished_spans()
    assert spans and {format(s.context.trace_id, "032x") for s in spans} == {TRACE_ID}
    ids = {s.context.span_id for s in spans}
    roots = [s for s in spans if s.parent is None or s.parent.span_id not in ids]
    assert len(roots) == 1 and format(roots[0].parent.span_id, "016x") == PARENT_ID
    assert roots[0].parent.is_remote and roots[0].name.startswith("POST /v1/classify")
    assert roots[0].resource.attributes["service.name"] == "mnist-cvae"  # OTEL_SERVICE_NAME unset
    named = by_name(spans)
    for child in ("admission.wait", "admission.run", "score", "model.call", "batcher.wait", "critic", "assessment"):
        assert child in named, f"no {child} span among {sorted(named)}"
    (score,) = named["score"]
    assert score.attributes["model.name"] == answer.headers["X-Model-Name"]
    assert score.attributes["model.version"] == answer.headers["X-Model-Version"]
    assert score.attributes["images"] == 2 and score.attributes["samples"] == 64
    assert score.attributes["classes"] == 10 and score.attributes["samples_used"] > 0
    calls = named["model.call"]
    assert {c.attributes["graph"] for c in calls} == {"scorer"} and all(c.attributes["rows"] >= 1 for c in calls)
    assert all(1 <= c.attributes["K"] <= 64 for c in calls)
    assert all("secret-key" not in str(dict(s.attributes)) for s in spans)  # no key in any span


def test_tracing_off_installs_nothing_and_makes_no_spans(shipped_model):
    app = create_app(Settings(model_dir=shipped_model))
    assert app.state.tracer_provider is None
    assert not instrumented(app)
    with TestClient(app) as client:
        wait_ready(client)
        answer = client.post("/v1/classify", json=classify_body(), headers={"traceparent": TRACEPARENT})
        assert answer.status_code == 200 and telemetry.TRACER.get() is None
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)  # nothing global either


class Collector(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver that keeps what it is sent."""

    received: list[tuple[str, str, bytes]] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Collector.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_spans_go_in_batches_to_the_otlp_endpoint_and_the_last_at_shutdown(shipped_model, monkeypatch):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "cvae-test")  # OpenTelemetry's own variable names the service
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}/v1/traces"
    try:
        app = create_app(Settings(model_dir=shipped_model, otlp_endpoint=endpoint))
        with TestClient(app) as client:
            wait_ready(client)
            assert client.post("/v1/classify", json=classify_body(), headers={"traceparent": TRACEPARENT}).is_success
    finally:
        collector.shutdown()
    assert Collector.received, "no spans reached the collector by the end of the lifespan"
    path, content_type, body = Collector.received[-1]
    assert path == "/v1/traces" and content_type == "application/x-protobuf"
    sent = b"".join(body for _, _, body in Collector.received)
    assert bytes.fromhex(TRACE_ID) in sent and b"cvae-test" in sent and b"assessment" in sent


# as if the tracing extra were not installed (FastAPI brings opentelemetry-api itself)
BLOCKED = "import sys; sys.modules.update({'opentelemetry.sdk': None, 'opentelemetry.instrumentation': None})\n"


def create_app_without_opentelemetry(model_dir, **env) -> subprocess.CompletedProcess:
    code = BLOCKED + "from service.app import create_app; create_app(); print('created')"
    env = {**os.environ, "CVAE_MODEL_DIR": str(model_dir), **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)


def test_without_the_extra_the_service_starts_untraced_and_says_what_to_install_when_asked(shipped_model):
    off = create_app_without_opentelemetry(shipped_model)
    assert off.returncode == 0 and "created" in off.stdout, off.stderr
    on = create_app_without_opentelemetry(shipped_model, CVAE_OTLP_ENDPOINT="http://127.0.0.1:4318/v1/traces")
    assert on.returncode != 0 and "pip install 'mnist-cvae[tracing]'" in on.stderr, on.stderr


def test_a_grpc_model_infer_joins_the_callers_trace(shipped_model):
    grpcclient = pytest.importorskip("tritonclient.grpc")
    exporter = InMemorySpanExporter()
    port = free_port()
    app = create_app(Settings(model_dir=shipped_model, grpc_port=port, api_keys="secret-key"), span_exporter=exporter)
    with TestClient(app) as client:
        wait_ready(client)
        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        latent = int(grpc.get_model_metadata("decoder", headers=KEY, as_json=True)["inputs"][0]["shape"][1])
        inputs = [grpcclient.InferInput("z", [3, latent], "FP32"), grpcclient.InferInput("y", [3, 10], "FP32")]
        inputs[0].set_data_from_numpy(np.zeros((3, latent), np.float32))
        inputs[1].set_data_from_numpy(np.eye(10, dtype=np.float32)[:3])
        exporter.clear()
        grpc.infer("decoder", inputs, headers={"traceparent": TRACEPARENT, "x-api-key": "secret-key"})
        grpc.close()
    spans = exporter.get_finished_spans()
    assert spans and {format(s.context.trace_id, "032x") for s in spans} == {TRACE_ID}
    ids = {s.context.span_id for s in spans}
    roots = [s for s in spans if s.parent is None or s.parent.span_id not in ids]
    assert len(roots) == 1 and format(roots[0].parent.span_id, "016x") == PARENT_ID
    assert roots[0].name.endswith("/ModelInfer")
    named = by_name(spans)
    infer = roots[0]
    assert infer.attributes["model.name"] == "decoder" and infer.attributes["model.version"]
    assert "admission.run" in named and named["model.call"][0].attributes == {"graph": "decoder", "rows": 3}
    assert all("secret-key" not in str(dict(s.attributes)) for s in spans)
