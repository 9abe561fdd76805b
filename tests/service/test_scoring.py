import base64
import io
import math
import zlib

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def digits(client):
    """Binary digit images drawn from the model itself, one per class."""
    body = client.post("/v1/samples", json={"n": 10, "seed": 5, "binary": True}).json()
    return [s["x"] for s in body["samples"]], [s["y"] for s in body["samples"]]


def test_log_likelihood_fields_are_consistent(client, manifest, digits):
    images, _ = digits
    request = {"images": images[:3], "num_samples": 200, "include": ["estimates", "elbo", "settings"]}
    body = client.post("/v1/log-likelihood", json=request).json()
    assert body["settings"]["num_samples"] == 200 and isinstance(body["seed"], int)  # no seed: a fresh one, reported
    assert (body["settings"]["binarize"], body["settings"]["threshold"]) == ("threshold", 0.5)
    assert (body["model"], body["version"]) == (manifest["model"], manifest["version"])
    prior = np.log(manifest["class_prior"])
    for r in body["results"]:
        log_px_y = np.array(r["log_px_y"])
        assert r["log_px"] == pytest.approx(np.logaddexp.reduce(log_px_y + prior), abs=1e-6)
        assert r["bits_per_dim"] == pytest.approx(-r["log_px"] / (784 * math.log(2)))
        assert r["log_px"] < 0 and r["log_px_std_error"] >= 0
        assert all(1 <= e <= 200 + 1e-6 for e in r["effective_sample_size"])
        elbo = r["elbo"]
        assert elbo["value"] == pytest.approx(elbo["reconstruction"] - elbo["kl_z"] - elbo["kl_y"])
        assert elbo["value"] <= r["log_px"] + 5 * r["log_px_std_error"] + 1e-6


def test_scores_are_reproducible_and_vary_with_the_seed(client, digits):
    images, _ = digits
    request = {"images": images[:2], "num_samples": 100, "seed": 11}
    a = client.post("/v1/log-likelihood", json=request).json()
    assert a == client.post("/v1/log-likelihood", json=request).json()
    b = client.post("/v1/log-likelihood", json={**request, "seed": 12}).json()
    assert a["results"][0]["log_px"] != b["results"][0]["log_px"]


def test_classify_is_bayes_rule_over_the_same_estimates(client, digits):
    images, labels = digits
    request = {"images": images, "num_samples": 200, "seed": 3, "include": ["estimates"]}
    classes = client.post("/v1/classify", json=request).json()["results"]
    scores = client.post("/v1/log-likelihood", json=request).json()["results"]
    for c, s in zip(classes, scores):
        probs = np.array(c["probs"])
        assert probs.sum() == pytest.approx(1.0, abs=1e-9)
        assert c["predicted"] == int(probs.argmax()) and c["probability"] == pytest.approx(probs.max())
        assert 0 <= c["entropy"] <= math.log(10) + 1e-9
        assert c["log_px"] == pytest.approx(s["log_px"])
    accuracy = np.mean([c["predicted"] == y for c, y in zip(classes, labels)])
    assert accuracy >= 0.8  # the model recognizes most of its own samples


def test_all_input_formats_give_the_same_answer(client, digits):
    images, _ = digits
    flat = images[0]
    rows = np.array(flat).reshape(28, 28).tolist()
    bytes_ = [v * 255 for v in flat]
    buffer = io.BytesIO()
    Image.fromarray((np.array(flat).reshape(28, 28) * 255).astype(np.uint8), mode="L").save(buffer, "PNG")
    png = base64.b64encode(buffer.getvalue()).decode()
    rgba = io.BytesIO()
    alpha = (np.array(flat).reshape(28, 28) * 255).astype(np.uint8)
    Image.fromarray(np.stack([np.zeros_like(alpha)] * 3 + [alpha], -1), mode="RGBA").save(rgba, "PNG")
    drawn = "data:image/png;base64," + base64.b64encode(rgba.getvalue()).decode()
    answers = [
        client.post("/v1/classify", json={"images": [image], "num_samples": 50, "seed": 0}).json()["results"][0]
        for image in (flat, rows, bytes_, png, drawn)
    ]
    assert all(a == answers[0] for a in answers)


def test_grey_inputs_are_binarized_as_asked(client, digits):
    grey = [0.3] * 392 + [0.7] * 392
    base = {"images": [grey], "num_samples": 50, "seed": 0, "include": ["settings"]}
    default = client.post("/v1/log-likelihood", json=base).json()
    explicit = [0.0] * 392 + [1.0] * 392
    same = client.post("/v1/log-likelihood", json={**base, "images": [explicit]}).json()
    assert default["results"] == same["results"]
    low = client.post("/v1/log-likelihood", json={**base, "threshold": 0.2}).json()
    assert low["settings"] == {**default["settings"], "threshold": 0.2}
    assert low["results"] != default["results"]
    stochastic = client.post("/v1/log-likelihood", json={**base, "binarize": "bernoulli"}).json()
    assert (stochastic["settings"]["binarize"], stochastic["settings"]["threshold"]) == ("bernoulli", None)
    refused = client.post("/v1/log-likelihood", json={**base, "binarize": "none"})
    assert refused.status_code == 422 and "binarize" in refused.json()["error"]


def test_encode_every_class_or_one(client, manifest, digits):
    images, _ = digits
    every = client.post("/v1/encode", json={"images": images[:2]}).json()["results"]
    assert len(every) == 2 and [p["y"] for p in every[0]] == list(range(10))
    assert len(every[0][0]["mu"]) == manifest["latent_dim"] and min(every[0][0]["std"]) > 0
    one = client.post("/v1/encode", json={"images": images[:2], "y": 6}).json()["results"]
    assert one[1][0] == every[1][6]


BAD_IMAGES = [
    ({"images": [[0.5] * 783]}, "images[0]", "784"),
    ({"images": [[[0.0] * 28] * 27]}, "images[0]", "28"),
    ({"images": [[0.0] * 784, [2.5] + [0.0] * 783]}, "images[1]", "0-255"),
    ({"images": [[-0.1] + [0.0] * 783], "pixel_scale": "unit"}, "images[0]", "[0, 1]"),
    ({"images": [[300] + [0] * 783]}, "images[0]", "0 to 255"),
    ({"images": [["a"] * 784]}, "images[0]", "numbers"),
    ({"images": ["not base64!"]}, "images[0]", "base64"),
    ({"images": [base64.b64encode(b"GIF89a nonsense").decode()]}, "images[0]", "PNG"),
    ({"images": [[0.0] * 784] * 17}, "images", "limit is 16"),
    ({"images": [[0.0] * 784], "num_samples": 10**7}, "num_samples", "CVAE_MAX_NUM_SAMPLES"),
    ({"images": [[0.0] * 784] * 16, "num_samples": 5000}, "num_samples", "CVAE_MAX_WORK"),
    ({"images": [[0.0] * 784], "num_samples": 0}, "num_samples", ""),
    ({"images": [[0.0] * 784], "threshold": 1.5}, "threshold", ""),
    ({"images": [[0.0] * 784], "binarize": "otsu"}, "binarize", ""),
    ({"images": []}, "images", ""),
    ({"pictures": []}, "images", ""),
]


@pytest.mark.parametrize("path", ["/v1/log-likelihood", "/v1/classify"])
def test_bad_images_get_422_naming_the_field(client, path):
    for body, field, hint in BAD_IMAGES:
        response = client.post(path, json=body)
        assert response.status_code == 422, (body, response.text)
        problems = response.json()["problems"]
        assert problems[0]["field"] == field, (body, problems)
        assert hint in response.json()["error"], (body, response.json())


def test_a_field_of_an_earlier_release_says_what_to_send_now(client):
    response = client.post("/v1/classify", json={"images": [[0.0] * 784], "return_x": True})
    problem = response.json()["problems"][0]
    assert response.status_code == 422 and problem["field"] == "return_x" and '"include": ["x"]' in problem["message"]


def test_nan_and_infinity_are_refused(client):
    for token in ("NaN", "Infinity", "1e999"):
        body = '{"images": [[' + ", ".join([token] + ["0"] * 783) + "]]}"
        response = client.post("/v1/classify", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 422, token
        assert response.json()["problems"][0]["field"] == "images[0]"


def test_png_of_the_wrong_size_is_refused(client):
    buffer = io.BytesIO()
    Image.new("L", (32, 32)).save(buffer, "PNG")
    response = client.post("/v1/classify", json={"images": [base64.b64encode(buffer.getvalue()).decode()]})
    assert response.status_code == 422 and "28x28" in response.json()["error"]


def test_malformed_json_and_large_bodies(client):
    response = client.post("/v1/classify", content=b"{oops", headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["problems"][0]["field"] == "body"
    huge = {"images": [[0.123456789] * 784] * 40}
    response = client.post("/v1/classify", json=huge)
    assert response.status_code == 413 and "CVAE_MAX_BODY_BYTES" in response.json()["error"]


def test_hostile_numbers_and_images_are_422(client):
    huge_int = "[" + ", ".join(["1" + "0" * 400] + ["0"] * 783) + "]"
    response = client.post(
        "/v1/classify", content='{"images": [' + huge_int + "]}", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422 and response.json()["problems"][0]["field"] == "images[0]"
    # a PNG header claiming 20000x20000 pixels (a few KB that would decode to 400 MB)
    buffer = io.BytesIO()
    Image.new("L", (28, 28)).save(buffer, "PNG")
    raw = bytearray(buffer.getvalue())
    raw[16:24] = (20000).to_bytes(4, "big") * 2
    raw[29:33] = zlib.crc32(bytes(raw[12:29])).to_bytes(4, "big")  # a valid header chunk
    response = client.post("/v1/classify", json={"images": [base64.b64encode(bytes(raw)).decode()]})
    assert response.status_code == 422 and response.json()["problems"][0]["field"] == "images[0]"
    assert "PNG" in response.json()["error"]
    icon = io.BytesIO()  # a format Pillow reads but the service does not take: refused, naming those it takes
    Image.new("L", (28, 28)).save(icon, "ICO")
    response = client.post("/v1/classify", json={"images": [base64.b64encode(icon.getvalue()).decode()]})
    assert response.status_code == 422 and "PNG, JPEG, WebP, GIF, BMP or TIFF" in response.json()["error"]


def test_a_streamed_body_over_the_limit_is_413(client):
    def chunks():
        for _ in range(50):
            yield b" " * 10_000

    response = client.post("/v1/classify", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and "CVAE_MAX_BODY_BYTES" in response.json()["error"]


def test_num_samples_needs_two_for_a_standard_error(client):
    response = client.post("/v1/log-likelihood", json={"images": [[0.0] * 784], "num_samples": 1})
    assert response.status_code == 422 and response.json()["problems"][0]["field"] == "num_samples"
    two = client.post("/v1/log-likelihood", json={"images": [[0.0] * 784], "num_samples": 2}).json()
    assert two["results"][0]["log_px_std_error"] >= 0
