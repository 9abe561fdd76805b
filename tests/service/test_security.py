"""API keys, CORS, request ids and what reaches the logs."""

import json
import logging

import pytest
from fastapi.testclient import TestClient
from servers import wait_ready

from service.app import create_app
from service.settings import Settings

KEYS = "k-first-0123456789,k-second-9876543210"
IMAGE = [0.0] * 783 + [0.123456789]


@pytest.fixture(scope="module")
def locked(shipped_model):
    with TestClient(create_app(Settings(model_dir=shipped_model, api_keys=KEYS))) as client:
        wait_ready(client)
        yield client


def test_probes_stay_open_and_everything_else_needs_a_key(locked):
    assert locked.get("/healthz").status_code == 200
    assert locked.get("/readyz").status_code == 200
    for method, path in [
        ("get", "/v1/model"),
        ("get", "/metrics"),
        ("post", "/v1/samples"),
    ]:
        response = getattr(locked, method)(path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
        assert "API key" in response.json()["error"]
    # the docs hold no data and must be readable to be used; their "Authorize" button takes the key
    for path in ("/docs", "/redoc", "/openapi.json", "/favicon.ico", "/docs-assets/swagger-ui.css"):
        assert locked.get(path).status_code == 200, path
    schema = locked.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert {"bearer": []} in schema["security"]


def test_wrong_key_is_403_and_either_key_works_in_either_header(locked):
    wrong = locked.post("/v1/samples", json={"n": 1}, headers={"Authorization": "Bearer k-first-0123456780"})
    assert wrong.status_code == 403
    for key in KEYS.split(","):
        assert locked.post("/v1/samples", json={"n": 1}, headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert locked.get("/v1/model", headers={"X-API-Key": key}).status_code == 200


def test_no_keys_means_open(client):
    assert client.get("/v1/model").status_code == 200


def test_cors_is_closed_by_default_and_opens_per_setting(client, shipped_model):
    preflight = {"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
    closed = client.options("/v1/samples", headers=preflight)
    assert "access-control-allow-origin" not in closed.headers
    settings = Settings(model_dir=shipped_model, cors_origins="https://example.org")
    with TestClient(create_app(settings)) as open_client:
        response = open_client.options("/v1/samples", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "https://example.org"
        other = open_client.options("/v1/samples", headers={**preflight, "Origin": "https://evil.test"})
        assert "access-control-allow-origin" not in other.headers
        answer = open_client.post("/v1/samples", json={"n": 1, "seed": 0}, headers={"Origin": "https://example.org"})
        exposed = {h.strip().lower() for h in answer.headers["access-control-expose-headers"].split(",")}
        assert {"x-seed", "x-model-name", "x-model-version"} <= exposed  # a page can read which version answered


def test_request_id_is_echoed_or_made(client):
    given = client.get("/healthz", headers={"X-Request-ID": "trace-42"})
    assert given.headers["x-request-id"] == "trace-42"
    made = client.get("/healthz")
    assert len(made.headers["x-request-id"]) == 32
    hostile = client.get("/healthz", headers={"X-Request-ID": "a\\nb" * 100})
    assert hostile.headers["x-request-id"] != "a\\nb" * 100


def test_logs_are_json_lines_without_keys_or_pixels(locked, caplog):
    from service.telemetry import JsonFormatter

    key = KEYS.split(",")[0]
    with caplog.at_level(logging.INFO, logger="cvae.access"):
        locked.post(
            "/v1/classify",
            json={"images": [IMAGE], "num_samples": 10},
            headers={"Authorization": f"Bearer {key}", "X-Request-ID": "log-check"},
        )
        locked.post("/v1/classify", json={"images": [IMAGE]}, headers={"Authorization": "Bearer nope"})
        locked.post(
            "/v1/classify", json={"images": [IMAGE], "num_samples": 1}, headers={"Authorization": f"Bearer {key}"}
        )
    lines = [JsonFormatter().format(record) for record in caplog.records]
    entries = [json.loads(line) for line in lines]
    mine = [e for e in entries if e.get("request_id") == "log-check"]
    assert mine and mine[0]["status"] == 200 and mine[0]["path"] == "/v1/classify" and mine[0]["latency_ms"] > 0
    assert any(e["status"] == 403 and "API key is not valid" in e["error"] for e in entries)
    assert any(e["status"] == 422 and "num_samples" in e["error"] for e in entries)  # the reason, not just 422
    assert "error" not in mine[0]
    text = "\n".join(lines)
    assert key not in text and "nope" not in text and "0.123456789" not in text
