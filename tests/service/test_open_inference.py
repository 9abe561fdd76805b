"""The Open Inference Protocol (KServe V2), spoken to by Triton's own HTTP client."""

import numpy as np
import pytest
from servers import running_server

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture(scope="module")
def triton(shipped_model):
    with running_server(shipped_model, log_format="text") as (base, _):
        client = httpclient.InferenceServerClient(url=base.removeprefix("http://"))
        yield client, base
        client.close()


def test_health_and_metadata(triton):
    client, _ = triton
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata()["name"] == "mnist-cvae"
    for name in ("encoder", "decoder", "scorer"):
        assert client.is_model_ready(name)
    meta = client.get_model_metadata("decoder")
    assert meta["platform"] == "onnxruntime_onnx"
    shapes = {t["name"]: t["shape"] for t in meta["inputs"] + meta["outputs"]}
    assert shapes["y"] == [-1, 10] and shapes["logits"] == [-1, 784] and shapes["z"][0] == -1


def tensor(name, array):
    t = httpclient.InferInput(name, list(array.shape), "FP32")
    t.set_data_from_numpy(array.astype(np.float32), binary_data=False)
    return t


def test_decoder_inference_matches_v1_samples(triton):
    client, base = triton
    import httpx

    latent = client.get_model_metadata("decoder")["inputs"][0]["shape"][1]
    z = np.random.default_rng(0).standard_normal((3, latent)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[[2, 5, 9]]
    result = client.infer(
        "decoder",
        [tensor("z", z), tensor("y", y)],
        outputs=[httpclient.InferRequestedOutput("logits", binary_data=False)],
    )
    logits = result.as_numpy("logits")
    assert logits.shape == (3, 784)
    for i, label in enumerate((2, 5, 9)):
        v1 = httpx.post(f"{base}/v1/samples", json={"z": [z[i].tolist()], "y": label}).json()
        assert np.allclose(1 / (1 + np.exp(-logits[i].astype(np.float64))), v1["samples"][0]["mean"], atol=1e-6)


def test_encoder_inference_matches_v1_encode(triton):
    client, base = triton
    import httpx

    x = (np.random.default_rng(1).random((2, 784)) > 0.8).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[[4, 4]]
    result = client.infer(
        "encoder",
        [tensor("x", x), tensor("y", y)],
        outputs=[httpclient.InferRequestedOutput(n, binary_data=False) for n in ("mu", "logvar")],
    )
    v1 = httpx.post(f"{base}/v1/encode", json={"images": x.tolist(), "y": 4, "binarize": "none"}).json()
    for i in range(2):
        assert np.allclose(result.as_numpy("mu")[i], v1["results"][i][0]["mu"], atol=1e-6)
        assert np.allclose(np.exp(0.5 * result.as_numpy("logvar")[i]), v1["results"][i][0]["std"], atol=1e-6)


def test_scorer_inference_gives_log_weights(triton):
    client, _ = triton
    latent = client.get_model_metadata("scorer")["inputs"][2]["shape"][2]
    x = (np.random.default_rng(2).random((2, 784)) > 0.8).astype(np.float32)
    eps = np.random.default_rng(3).standard_normal((5, 2, latent)).astype(np.float32)
    result = client.infer(
        "scorer",
        [tensor("x", x), tensor("y", np.eye(10)[[0, 1]]), tensor("eps", eps)],
        outputs=[httpclient.InferRequestedOutput("log_w", binary_data=False)],
    )
    log_w = result.as_numpy("log_w")
    assert log_w.shape == (5, 2) and np.isfinite(log_w).all() and (log_w < 0).all()


def test_errors_use_the_protocol_error_body(triton):
    client, _ = triton
    with pytest.raises(InferenceServerException, match="Unknown model"):
        client.get_model_metadata("nonexistent")
    z = np.zeros((1, 3), dtype=np.float32)
    with pytest.raises(InferenceServerException, match="shape"):
        client.infer(
            "decoder",
            [tensor("z", z), tensor("y", np.eye(10)[:1])],
            outputs=[httpclient.InferRequestedOutput("logits", binary_data=False)],
        )


def test_too_many_rows_and_non_finite_outputs_are_refused(triton):
    _, base = triton
    import httpx

    body = {
        "inputs": [
            {"name": "z", "shape": [2000, 1], "datatype": "FP32", "data": [0.0] * 2000},
            {"name": "y", "shape": [2000, 10], "datatype": "FP32", "data": [0.0] * 20000},
        ]
    }
    latent = httpx.get(f"{base}/v2/models/decoder").json()["inputs"][0]["shape"][1]
    body["inputs"][0] = {"name": "z", "shape": [2000, latent], "datatype": "FP32", "data": [0.0] * 2000 * latent}
    response = httpx.post(f"{base}/v2/models/decoder/infer", json=body)
    assert response.status_code == 413 and "limit" in response.json()["error"]
    x = {"name": "x", "shape": [1, 784], "datatype": "FP32", "data": [3e38] * 784}
    y = {"name": "y", "shape": [1, 10], "datatype": "FP32", "data": [1.0] + [0.0] * 9}
    response = httpx.post(f"{base}/v2/models/encoder/infer", json={"inputs": [x, y]})
    assert response.status_code == 400 and "not finite" in response.json()["error"]
