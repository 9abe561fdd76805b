"""Answers a person can read: the likely mistake named, and one seed rule on every endpoint."""

import json

from service.schemas import DIGIT_PNG


def test_a_flat_list_of_numbers_is_called_what_it_is(client):
    response = client.post("/v1/classify", json={"images": [0.0] * 784})
    assert response.status_code == 422
    body = response.json()
    assert body["problems"][0]["field"] == "images"
    assert "flat list of 784 numbers" in body["error"] and "limit" not in body["error"]


def test_a_body_without_the_json_content_type_says_so(client):
    payload = json.dumps({"images": [DIGIT_PNG], "num_samples": 20})
    for headers in ({}, {"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}):
        response = client.post("/v1/classify", content=payload, headers=headers)
        assert response.status_code == 422, headers
        assert "Content-Type: application/json" in response.json()["error"], headers
    assert client.post("/v1/classify", content=payload, headers={"Content-Type": "application/json"}).status_code == 200


def test_an_empty_body_is_fine_where_every_field_has_a_default(client):
    answer = client.post("/v1/samples")
    assert answer.status_code == 200 and len(answer.json()["samples"]) == 1
    assert client.post("/v1/samples", json={}).status_code == 200
    missing = client.post("/v1/classify")
    assert missing.status_code == 422 and "is empty" in missing.json()["error"]


def test_every_endpoint_draws_fresh_without_a_seed_and_reports_the_one_it_used(client):
    first, second = client.get("/v1/samples.png?n=4"), client.get("/v1/samples.png?n=4")
    assert first.content != second.content
    again = client.get(f"/v1/samples.png?n=4&seed={first.headers['x-seed']}")
    assert again.content == first.content and again.headers["x-seed"] == first.headers["x-seed"]

    request = {"images": [DIGIT_PNG], "num_samples": 50}
    a, b = (client.post("/v1/log-likelihood", json=request).json() for _ in range(2))
    assert a["seed"] != b["seed"]
    replay = client.post("/v1/log-likelihood", json={**request, "seed": a["seed"]}).json()
    assert replay["results"][0]["log_px"] == a["results"][0]["log_px"]

    encoded = client.post("/v1/encode", json={"images": [DIGIT_PNG], "binarize": "bernoulli", "y": 3}).json()
    replay = client.post(
        "/v1/encode", json={"images": [DIGIT_PNG], "binarize": "bernoulli", "y": 3, "seed": encoded["seed"]}
    ).json()
    assert replay["results"] == encoded["results"]
