"""The Open Inference Protocol (KServe V2), spoken to by Triton's own HTTP client."""

import json

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


def test_stock_client_defaults_send_and_receive_binary_tensors(triton):
    client, _ = triton
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    latent = client.get_model_metadata("decoder")["inputs"][0]["shape"][1]
    z = np.random.default_rng(2).standard_normal((4, latent)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[[0, 3, 3, 8]]

    def binary(name, array):  # tritonclient's defaults: binary_data=True
        t = httpclient.InferInput(name, list(array.shape), "FP32")
        t.set_data_from_numpy(array)
        return t

    json_answer = client.infer(
        "decoder",
        [tensor("z", z), tensor("y", y)],
        outputs=[httpclient.InferRequestedOutput("logits", binary_data=False)],
    ).as_numpy("logits")
    all_binary = client.infer("decoder", [binary("z", z), binary("y", y)]).as_numpy("logits")  # no outputs named
    binary_in = client.infer(
        "decoder", [binary("z", z), tensor("y", y)], outputs=[httpclient.InferRequestedOutput("logits", False)]
    ).as_numpy("logits")
    binary_out = client.infer(
        "decoder", [tensor("z", z), tensor("y", y)], outputs=[httpclient.InferRequestedOutput("logits")]
    ).as_numpy("logits")
    assert json_answer.shape == (4, 784) and json_answer.dtype == np.float32
    for other in (all_binary, binary_in, binary_out):
        np.testing.assert_array_equal(other, json_answer)
    encoded = client.infer("encoder", [binary("x", (np.zeros((2, 784)) + 1).astype(np.float32)), binary("y", y[:2])])
    assert encoded.as_numpy("mu").shape == (2, latent) and encoded.as_numpy("logvar").shape == (2, latent)


def test_other_datatypes_are_refused_and_metadata_follows_the_manifest(triton):
    client, base = triton
    import httpx

    latent = httpx.get(f"{base}/v1/model").json()["latent_dim"]
    z = httpclient.InferInput("z", [1, latent], "FP64")
    z.set_data_from_numpy(np.zeros((1, latent)))
    with pytest.raises(InferenceServerException, match="FP64; this model takes FP32"):
        client.infer("decoder", [z, tensor("y", np.eye(10)[:1])])
    shapes = {t["name"]: t["shape"] for t in client.get_model_metadata("encoder")["outputs"]}
    assert shapes == {"mu": [-1, latent], "logvar": [-1, latent]}
    scorer = {t["name"]: t["shape"] for t in client.get_model_metadata("scorer")["inputs"]}
    assert scorer["eps"] == [-1, -1, latent]


def test_a_wrong_binary_header_length_is_explained(triton):
    _, base = triton
    import httpx

    response = httpx.post(
        f"{base}/v2/models/decoder/infer", content=b'{"inputs": []}', headers={"Inference-Header-Content-Length": "99"}
    )
    assert response.status_code == 400 and "Inference-Header-Content-Length" in response.json()["error"]
    for header in ("²".encode("latin-1"), b"-1", b"x"):  # a superscript two passes str.isdigit()
        bad = httpx.post(
            f"{base}/v2/models/decoder/infer", content=b"{}", headers={"Inference-Header-Content-Length": header}
        )
        assert bad.status_code == 400, header


def test_malformed_binary_tensors_are_refused_with_the_reason(triton):
    _, base = triton
    import json

    import httpx

    latent = httpx.get(f"{base}/v2/models/decoder").json()["inputs"][0]["shape"][1]
    z = np.zeros((1, latent), "<f4").tobytes()
    y = np.eye(10, dtype="<f4")[:1].tobytes()

    def send(inputs, payload):
        header = json.dumps({"inputs": inputs}).encode()
        return httpx.post(
            f"{base}/v2/models/decoder/infer",
            content=header + payload,
            headers={"Inference-Header-Content-Length": str(len(header))},
        )

    def spec(name, shape, size):
        return {"name": name, "shape": shape, "datatype": "FP32", "parameters": {"binary_data_size": size}}

    good = [spec("z", [1, latent], len(z)), spec("y", [1, 10], len(y))]
    assert send(good, z + y).status_code == 200
    cases = {
        "needs": ([spec("z", [1, latent], len(z) - 4), spec("y", [1, 10], len(y))], z + y),
        "belong to no input": (good, z + y + b"extra"),
        "end before": (good, z),
        "appear once": ([*good, spec("y", [1, 10], len(y))], z + y + y),
        "too large": ([spec("z", [2**31, 2**31, latent], 0), spec("y", [1, 10], len(y))], y),
    }
    for reason, (inputs, payload) in cases.items():
        answer = send(inputs, payload)
        assert answer.status_code == 400, reason
        assert reason in answer.json()["error"] or "shape" in answer.json()["error"], (reason, answer.json())


def test_content_types_a_browser_sends_across_origins_are_refused(client):
    body = json.dumps({"inputs": [{"name": "z", "shape": [1, 32], "datatype": "FP32", "data": [0.0] * 32}]})
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        answer = client.post("/v2/models/decoder/infer", content=body, headers={"content-type": content_type})
        assert answer.status_code == 415 and "application/json" in answer.json()["error"], content_type
