def test_health_readiness_and_model(client, manifest):
    assert client.get("/healthz").json() == {"status": "alive"}
    assert client.get("/readyz").status_code == 200
    assert manifest["active_providers"][-1] == "CPUExecutionProvider"
    assert "manifest" not in manifest and len(client.get("/v1/model").content) < 4000  # compact unless asked
    whole = client.get("/v1/model", params={"include": "manifest"}).json()["manifest"]
    assert manifest["latent_dim"] == whole["latent_dim"] and (manifest["model"], manifest["version"]) == (
        whole["name"],
        whole["version"],
    )
    assert abs(sum(manifest["class_prior"]) - 1) < 1e-9
    assert manifest["limits"]["max_images"] == 16


def test_metrics_count_requests_errors_and_batch_sizes(client):
    client.post("/v1/samples", json={"n": 3, "seed": 0})
    client.post("/v1/samples", json={"y": 99})
    text = client.get("/metrics").text
    assert 'cvae_requests_total{endpoint="/v1/samples",method="POST",status="200"}' in text
    assert 'cvae_errors_total{endpoint="/v1/samples",status="422"}' in text
    assert 'cvae_request_seconds_bucket{endpoint="/v1/samples"' in text
    assert 'cvae_batch_images_count{endpoint="/v1/samples"}' in text


def test_openapi_documents_every_endpoint(client):
    schema = client.get("/openapi.json").json()
    for path in ("/v1/samples", "/v1/interpolations", "/v1/encode", "/v1/log-likelihood", "/v1/classify"):
        operation = schema["paths"][path]["post"]
        assert operation["summary"] and operation["description"]
        assert "422" in operation["responses"]
    for name in ("ScoreRequest", "ClassifyRequest", "SampleRequest", "EncodeRequest", "InterpolateRequest"):
        assert schema["components"]["schemas"][name].get("examples"), name
    assert client.get("/docs").status_code == 200


def test_docs_schema_and_favicon_are_counted_under_their_routes(client):
    for path in ("/docs", "/redoc", "/openapi.json", "/favicon.ico", "/docs-assets/swagger-ui.css"):
        assert client.get(path).status_code == 200, path
    assert client.get("/favicon.ico").headers["content-type"] == "image/png"
    assert client.get("/docs-assets/unknown.js").status_code == 404
    text = client.get("/metrics").text
    for endpoint in ("/docs", "/redoc", "/openapi.json", "/favicon.ico", "/docs-assets/{name}"):
        assert f'cvae_requests_total{{endpoint="{endpoint}",method="GET",status="200"}}' in text, endpoint
    assert "cdn" not in client.get("/docs").text.lower() and "cdn" not in client.get("/redoc").text.lower()
