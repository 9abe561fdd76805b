"""The real server: `cvae-serve` under uvicorn on a free port, spoken to over HTTP."""

import io
import os
import shutil
import subprocess

import httpx
import pytest
from PIL import Image
from servers import free_port, running_server, serve_command


@pytest.fixture(scope="module")
def server(shipped_model):
    with running_server(shipped_model) as (base, _):
        yield base


def test_endpoints_over_http(server):
    assert httpx.get(f"{server}/healthz").json() == {"status": "alive"}
    samples = httpx.post(f"{server}/v1/samples", json={"n": 2, "y": 1, "seed": 4, "binary": True}).json()
    x = samples["samples"][0]["x"]
    scored = httpx.post(f"{server}/v1/classify", json={"images": [x], "num_samples": 100}, timeout=30)
    assert scored.status_code == 200 and len(scored.json()["results"][0]["probs"]) == 10
    bad = httpx.post(f"{server}/v1/classify", json={"images": [[0.0] * 10]})
    assert bad.status_code == 422 and bad.json()["problems"][0]["field"] == "images[0]"
    assert "cvae_requests_total" in httpx.get(f"{server}/metrics").text


def test_png_endpoint_over_http(server):
    response = httpx.get(f"{server}/v1/samples.png", params={"y": 7, "n": 9, "seed": 0})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == (3 * 30 * 2, 3 * 30 * 2)


def test_a_corrupt_model_stops_the_server_with_one_message(shipped_model, tmp_path):
    broken = tmp_path / "model"
    shutil.copytree(shipped_model, broken)
    (broken / "encoder.onnx").write_bytes(b"garbage")
    env = {**os.environ, "CVAE_PORT": str(free_port()), "CVAE_MODEL_DIR": str(broken)}
    result = subprocess.run(serve_command(), env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "encoder.onnx does not match the sha256" in result.stdout + result.stderr


def test_a_variable_naming_no_setting_is_warned_of_at_start(shipped_model, tmp_path):
    # a corrupt model stops the server right after the settings are read: the warning comes first
    broken = tmp_path / "model"
    shutil.copytree(shipped_model, broken)
    (broken / "encoder.onnx").write_bytes(b"garbage")
    env = {**os.environ, "CVAE_MODEL_DIR": str(broken), "CVAE_BATCHING": "false", "CVAE_MAX_IMAGSE": "9"}
    result = subprocess.run(serve_command(), env=env, capture_output=True, text=True, timeout=60)
    for name in ("CVAE_BATCHING", "CVAE_MAX_IMAGSE"):
        assert f"warning: {name} is not a setting and is ignored" in result.stderr
    assert "CVAE_MODEL_DIR is not" not in result.stderr
