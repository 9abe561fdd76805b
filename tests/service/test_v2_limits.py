"""/v2 under hostile input: outputs named once, inputs that agree on N, rows counted as the graph
computes them, big scorer calls in chunks, clients that go away, and refusals in the protocol's words."""

import json

import numpy as np
import onnxruntime.capi.onnxruntime_pybind11_state as ort_state
import pytest
from fastapi.testclient import TestClient
from servers import send_partial_body, wait_ready

from service.app import create_app
from service.settings import Settings

CHUNK_ROWS = 16
MAX_WORK = 2000
INFER = "/v2/models/{}/infer"


@pytest.fixture(scope="module")
def client(shipped_model):
    settings = Settings(model_dir=shipped_model, score_chunk_rows=CHUNK_ROWS, max_work=MAX_WORK, max_samples=64)
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        yield c


@pytest.fixture
def scorer_runs(client, monkeypatch):
    """The shapes of eps in every run of the served scorer graph, in order."""
    sessions = client.app.state.repository.resolve().inference.model.sessions
    session, shapes = sessions["scorer"], []

    class Counting:
        def run(self, names, feeds):
            shapes.append(feeds["eps"].shape)
            return session.run(names, feeds)

    monkeypatch.setitem(sessions, "scorer", Counting())
    return shapes


def binary(inputs: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict:
    """httpx arguments of a request with every input as binary tensor data and every output as JSON."""
    specs = [
        {"name": n, "shape": list(a.shape), "datatype": "FP32", "parameters": {"binary_data_size": a.nbytes}}
        for n, a in inputs.items()
    ]
    header = json.dumps({"inputs": specs, **({"outputs": [{"name": n} for n in outputs]} if outputs else {})})
    payload = b"".join(np.ascontiguousarray(a, "<f4").tobytes() for a in inputs.values())
    return {"content": header.encode() + payload, "headers": {"Inference-Header-Content-Length": str(len(header))}}


def scorer_inputs(model, k: int, n: int, n_eps: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": (rng.random((n, model.x_dim)) > 0.7).astype(np.float32),
        "y": model.one_hot(np.arange(n) % model.num_classes),
        "eps": rng.standard_normal((k, n if n_eps is None else n_eps, model.latent_dim)).astype(np.float32),
    }


def decoder_json(model, z: list) -> list[dict]:
    """JSON inputs of the decoder: one z, class 0."""
    y = model.one_hot(np.zeros(1, int)).ravel().tolist()
    return [
        {"name": "z", "shape": [1, model.latent_dim], "datatype": "FP32", "data": z},
        {"name": "y", "shape": [1, model.num_classes], "datatype": "FP32", "data": y},
    ]


def outputs(answer) -> dict[str, np.ndarray]:
    return {t["name"]: np.asarray(t["data"], np.float32).reshape(t["shape"]) for t in answer.json()["outputs"]}


def test_outputs_are_named_once_and_each_the_graphs(client, model):
    body = {"inputs": decoder_json(model, [0.0] * model.latent_dim), "outputs": [{"name": "logits"}] * 2000}
    answer = client.post(INFER.format("decoder"), json=body)
    assert answer.status_code == 400 and "'logits'" in answer.json()["error"] and "once" in answer.json()["error"]
    answer = client.post(INFER.format("decoder"), json={**body, "outputs": [{"name": "logits"}, {"name": "mean"}]})
    assert answer.status_code == 400 and "'mean'" in answer.json()["error"] and "logits" in answer.json()["error"]


def test_inputs_must_agree_on_n_without_broadcasting(client, model):
    inputs = scorer_inputs(model, 5, 4, n_eps=3)
    answer = client.post(INFER.format("scorer"), **binary(inputs))
    error = answer.json()["error"]
    assert answer.status_code == 400 and "'x'" in error and "'eps'" in error and "disagree on N" in error
    encoder = {"x": inputs["x"], "y": inputs["y"][:2]}
    answer = client.post(INFER.format("encoder"), **binary(encoder))
    assert answer.status_code == 400 and "'x'" in answer.json()["error"] and "'y'" in answer.json()["error"]


def test_the_broadcast_that_multiplied_the_rows_is_refused(client, model):
    # x [40, 784] with eps [25, 1, D] counted 25 rows but ONNX Runtime would broadcast it to 1000
    answer = client.post(INFER.format("scorer"), **binary(scorer_inputs(model, 25, 40, n_eps=1)))
    assert answer.status_code == 400 and "no broadcasting" in answer.json()["error"]


def test_rows_are_counted_as_k_times_n_against_the_setting(client, model):
    answer = client.post(INFER.format("scorer"), **binary(scorer_inputs(model, 60, 40)))  # 2400 passes
    assert answer.status_code == 413 and "CVAE_MAX_WORK" in answer.json()["error"] and "2400" in answer.json()["error"]


@pytest.mark.parametrize(("k", "n"), [(3, 20), (40, 2), (5, 7)], ids=["split-n", "split-k", "split-n-fitting-k"])
def test_big_scorer_calls_run_in_chunks_and_answer_as_one_call(client, model, scorer_runs, k, n):
    inputs = scorer_inputs(model, k, n)
    answer = client.post(INFER.format("scorer"), **binary(inputs))
    assert answer.status_code == 200, answer.json()
    got = outputs(answer)
    log_w, log_px_z, kl = model.log_weights(inputs["x"], np.arange(n) % model.num_classes, inputs["eps"])
    np.testing.assert_array_equal(got["log_w"], log_w)
    np.testing.assert_array_equal(got["log_px_z"], log_px_z)
    np.testing.assert_allclose(got["kl"], kl, rtol=1e-6)  # a mean over K where K is split: see test_chunks.py
    assert len(scorer_runs) > 1 and all(a * b <= CHUNK_ROWS for a, b, _ in scorer_runs)
    assert sum(a * b for a, b, _ in scorer_runs) == k * n


def test_big_decoder_calls_run_in_chunks_too(client, model, monkeypatch):
    sessions = client.app.state.repository.resolve().inference.model.sessions
    session, rows = sessions["decoder"], []

    class Counting:
        def run(self, names, feeds):
            rows.append(len(feeds["z"]))
            return session.run(names, feeds)

    monkeypatch.setitem(sessions, "decoder", Counting())
    z = np.random.default_rng(4).standard_normal((40, model.latent_dim)).astype(np.float32)
    answer = client.post(
        INFER.format("decoder"), **binary({"z": z, "y": model.one_hot(np.arange(40) % model.num_classes)})
    )
    assert answer.status_code == 200, answer.json()
    np.testing.assert_array_equal(outputs(answer)["logits"], model.decode(z, np.arange(40) % model.num_classes))
    assert rows == [16, 16, 8]


def test_a_client_that_disconnects_mid_body_is_no_server_error(client, model):
    body = json.dumps({"inputs": decoder_json(model, [0.0] * model.latent_dim)})
    sent = send_partial_body(client.app, INFER.format("decoder"), body[:20].encode(), [], call=client.portal.call)
    assert sent == []  # nothing is answered to a client that is gone, as on /v1
    metrics = client.get("/metrics").text
    assert 'cvae_errors_total{endpoint="/v2/models/{name}/infer",status="500"}' not in metrics
    assert 'cvae_errors_total{endpoint="/v2/models/{name}/infer",status="499"}' not in metrics  # no answer sent
    assert 'cvae_requests_total{endpoint="/v2/models/{name}/infer",method="POST",status="499"}' in metrics


def test_null_in_data_is_called_null(client, model):
    z = [0.0] * model.latent_dim
    z[5] = None
    answer = client.post(INFER.format("decoder"), json={"inputs": decoder_json(model, z)})
    assert answer.status_code == 400 and "data[5] is null, not a number" in answer.json()["error"]


def test_onnx_runtime_refusals_are_told_in_the_protocols_terms(client, model, monkeypatch):
    sessions = client.app.state.repository.resolve().inference.model.sessions

    class Refusing:
        def run(self, names, feeds):
            raise ort_state.InvalidArgument("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions")

    monkeypatch.setitem(sessions, "scorer", Refusing())
    answer = client.post(INFER.format("scorer"), **binary(scorer_inputs(model, 2, 3)))
    error = answer.json()["error"]
    assert answer.status_code == 400 and "ONNXRuntimeError" not in error and "INVALID_ARGUMENT" not in error
    d = model.latent_dim
    assert f"eps [2, 3, {d}]" in error and f"eps [K, N, {d}]" in error and "FP32" in error
