"""The Open Inference Protocol over gRPC (CVAE_GRPC_PORT) with Triton's stock client: the same graphs
and answers as /v2 over HTTP, bit for bit, its refusals in gRPC's status codes, the API keys as
metadata, and no gRPC unless it is asked for."""

import logging
import queue
import time

import numpy as np
import psutil
import pytest
from fastapi.testclient import TestClient
from servers import free_port, held_calls, running_server, wait_for, wait_ready

from service.app import create_app
from service.settings import Settings

grpcclient = pytest.importorskip("tritonclient.grpc")
import grpc  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402
from tritonclient.grpc import service_pb2 as pb  # noqa: E402
from tritonclient.grpc import service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

MAX_SAMPLES = 64
KEYS = "first-key,second-key"


@pytest.fixture(scope="module")
def served(shipped_model):
    """(gRPC client, HTTP client, gRPC address) of one server with both on."""
    port = free_port()
    with running_server(shipped_model, grpc_port=port, max_samples=MAX_SAMPLES, log_format="text") as (base, _):
        address = f"127.0.0.1:{port}"
        yield grpcclient.InferenceServerClient(address), httpclient.InferenceServerClient(base[7:]), address


@pytest.fixture(scope="module")
def locked(shipped_model):
    """(gRPC client, gRPC address) of a server with API keys set."""
    port = free_port()
    with running_server(shipped_model, grpc_port=port, api_keys=KEYS, log_format="text"):
        yield grpcclient.InferenceServerClient(f"127.0.0.1:{port}"), f"127.0.0.1:{port}"


def decoder_inputs(latent: int, n: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, latent)).astype(np.float32)
    return {"z": z, "y": np.eye(10, dtype=np.float32)[np.arange(n) % 10]}


def scorer_inputs(latent: int, k: int = 3, n: int = 4, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": (rng.random((n, 784)) > 0.7).astype(np.float32),
        "y": np.eye(10, dtype=np.float32)[np.arange(n) % 10],
        "eps": rng.standard_normal((k, n, latent)).astype(np.float32),
    }


def infer(module, client, name: str, arrays: dict[str, np.ndarray], outputs: list[str], **kwargs):
    """The named outputs of a run through `client`, a tritonclient.grpc or .http client of its defaults."""
    inputs = []
    for key, array in arrays.items():
        inputs.append(module.InferInput(key, list(array.shape), "FP32"))
        inputs[-1].set_data_from_numpy(array)
    result = client.infer(name, inputs, **kwargs)
    return result, [result.as_numpy(output) for output in outputs]


def latent(client) -> int:
    return int(client.get_model_metadata("decoder", as_json=True)["inputs"][0]["shape"][1])


def status(raised) -> str:
    return raised.value.status().removeprefix("StatusCode.")


def test_server_health_and_metadata(served):
    client, http, _ = served
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "mnist-cvae" and meta["version"] == http.get_server_metadata()["version"]
    assert client.is_model_ready("scorer") and client.is_model_ready("decoder", "1.0.0")


def test_model_metadata_is_the_manifests_as_over_http(served):
    client, http, _ = served
    for name, version in (("scorer", ""), ("mnist-cvae-decoder", "1.0.0")):
        meta = client.get_model_metadata(name, version, as_json=True)
        over_http = http.get_model_metadata(name, version)
        for key in ("name", "versions", "platform"):
            assert meta[key] == over_http[key]
        for key in ("inputs", "outputs"):
            assert [(t["name"], t["datatype"], [int(s) for s in t["shape"]]) for t in meta[key]] == [
                (t["name"], t["datatype"], t["shape"]) for t in over_http[key]
            ]


@pytest.mark.parametrize("version", ["", "1.0.0"])
def test_decoder_and_scorer_answer_as_over_http_bit_for_bit(served, version):
    client, http, _ = served
    d = latent(client)
    for name, arrays, outputs in (
        ("decoder", decoder_inputs(d), ["logits"]),
        ("scorer", scorer_inputs(d), ["log_w", "log_px_z", "kl"]),
    ):
        answer, over_grpc = infer(grpcclient, client, name, arrays, outputs, model_version=version)
        _, over_http = infer(httpclient, http, name, arrays, outputs, model_version=version)
        assert answer.get_response().model_version == "1.0.0"
        for a, b in zip(over_grpc, over_http):
            assert a.dtype == np.float32 and np.array_equal(a, b)


def test_typed_fp32_contents_answer_as_raw_ones(served):
    client, _, address = served
    arrays = decoder_inputs(latent(client), n=3)
    request = pb.ModelInferRequest(model_name="decoder")
    for key, array in arrays.items():
        tensor = request.inputs.add(name=key, datatype="FP32", shape=array.shape)
        tensor.contents.fp32_contents.extend(array.ravel().tolist())
    with grpc.insecure_channel(address) as channel:
        answer = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    typed = np.frombuffer(answer.raw_output_contents[0], "<f4").reshape(answer.outputs[0].shape)
    assert np.array_equal(typed, infer(grpcclient, client, "decoder", arrays, ["logits"])[1][0])


def test_bad_requests_get_the_protocols_codes_and_reasons(served):
    client, _, _ = served
    d = latent(client)
    z, y = decoder_inputs(d, n=2).values()
    cases = [
        ("nonexistent", {"z": z, "y": y}, {}, "NOT_FOUND", "models are"),
        ("decoder", {"z": z, "y": y}, {"model_version": "9.9"}, "NOT_FOUND", "no version '9.9'"),
        ("decoder", {"z": z[:, :-1], "y": y}, {}, "INVALID_ARGUMENT", "shape"),
        ("decoder", {"z": z}, {}, "INVALID_ARGUMENT", "missing ['y']"),
        ("decoder", {"z": z[:1], "y": y}, {}, "INVALID_ARGUMENT", "disagree on N"),
        ("decoder", decoder_inputs(d, n=MAX_SAMPLES + 1), {}, "INVALID_ARGUMENT", "CVAE_MAX_SAMPLES"),
    ]
    for name, arrays, kwargs, code, words in cases:
        with pytest.raises(InferenceServerException) as raised:
            infer(grpcclient, client, name, arrays, [], **kwargs)
        assert status(raised) == code and words in raised.value.message(), (name, raised.value)
    with pytest.raises(InferenceServerException) as raised:
        client.get_model_metadata("nonexistent")
    assert status(raised) == "NOT_FOUND"


def test_other_datatypes_and_short_contents_are_invalid_arguments(served):
    client, _, address = served
    inputs = [grpcclient.InferInput("z", [1, latent(client)], "INT32"), grpcclient.InferInput("y", [1, 10], "FP32")]
    inputs[0].set_data_from_numpy(np.zeros((1, latent(client)), np.int32))
    inputs[1].set_data_from_numpy(np.eye(10, dtype=np.float32)[:1])
    with pytest.raises(InferenceServerException) as raised:
        client.infer("decoder", inputs)
    assert status(raised) == "INVALID_ARGUMENT" and "takes FP32" in raised.value.message()
    request = pb.ModelInferRequest(model_name="decoder")
    request.inputs.add(name="z", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend([0.0] * 3)
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as raised:
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "needs 16" in raised.value.details()


def test_a_message_over_the_body_limit_is_refused_by_grpc(served):
    _, _, address = served
    request = pb.ModelInferRequest(model_name="decoder", raw_input_contents=[bytes(Settings().max_body_bytes + 1)])
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as raised:
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_unserved_rpcs_and_closed_model_control(served):
    client, _, _ = served
    with pytest.raises(InferenceServerException) as raised:
        client.get_inference_statistics()
    assert status(raised) == "UNIMPLEMENTED" and "ModelInfer" in raised.value.message()
    with pytest.raises(InferenceServerException) as raised:
        client.unload_model("mnist-cvae")
    assert status(raised) == "PERMISSION_DENIED" and "CVAE_MODEL_CONTROL" in raised.value.message()
    assert client.is_model_ready("scorer")


def test_api_keys_come_as_metadata(locked):
    locked, _ = locked
    assert locked.is_server_live() and locked.is_server_ready()  # the probes are open, as over HTTP
    with pytest.raises(InferenceServerException) as raised:
        locked.get_model_metadata("decoder")
    assert status(raised) == "UNAUTHENTICATED"
    with pytest.raises(InferenceServerException) as raised:
        locked.get_server_metadata(headers={"authorization": "Bearer not-a-key"})
    assert status(raised) == "PERMISSION_DENIED"
    for headers in ({"authorization": "Bearer second-key"}, {"x-api-key": "first-key"}):
        arrays = decoder_inputs(latent_with(locked, headers), n=2)
        (logits,) = infer(grpcclient, locked, "decoder", arrays, ["logits"], headers=headers)[1]
        assert logits.shape == (2, 784)


def latent_with(client, headers) -> int:
    return int(client.get_model_metadata("decoder", headers=headers, as_json=True)["inputs"][0]["shape"][1])


def test_a_key_unloads_and_loads_a_version(locked):
    locked, address = locked
    key = {"authorization": "Bearer first-key"}
    unknown, known = (pb.RepositoryModelUnloadRequest(model_name="mnist-cvae") for _ in range(2))
    unknown.parameters["version"].string_param, known.parameters["version"].string_param = "9.9", "1.0.0"
    with grpc.insecure_channel(address) as channel:
        unload = service_pb2_grpc.GRPCInferenceServiceStub(channel).RepositoryModelUnload
        with pytest.raises(grpc.RpcError) as raised:
            unload(unknown, metadata=[("x-api-key", "second-key")])
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND and "'9.9'" in raised.value.details()
        unload(known, metadata=[("x-api-key", "second-key")])
    with pytest.raises(InferenceServerException) as raised:
        locked.get_model_metadata("decoder", "1.0.0", headers=key)
    assert status(raised) == "NOT_FOUND"
    locked.load_model("mnist-cvae", headers=key)  # no version: the newest on disk
    assert locked.is_model_ready("decoder", "1.0.0", headers=key)
    locked.unload_model("mnist-cvae", headers=key)  # no version: every one that serves
    with pytest.raises(InferenceServerException) as raised:
        locked.get_model_metadata("decoder", headers=key)
    assert status(raised) == "NOT_FOUND"
    locked.load_model("mnist-cvae", headers=key)
    assert locked.is_model_ready("decoder", headers=key)


def test_a_full_house_is_unavailable_and_a_slow_call_past_its_deadline(shipped_model):
    port, timeout = free_port(), 0.5
    settings = Settings(model_dir=shipped_model, grpc_port=port, max_in_flight=1, request_timeout_s=timeout)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        grpc_client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        inputs = []
        for key, array in decoder_inputs(latent(grpc_client), n=1).items():
            inputs.append(grpcclient.InferInput(key, list(array.shape), "FP32"))
            inputs[-1].set_data_from_numpy(array)
        answers = queue.Queue()
        with held_calls(client.app, "decoder") as (release, calls):
            grpc_client.async_infer("decoder", inputs, callback=lambda result, error: answers.put(error))
            wait_for(lambda: calls)  # admitted, its decoder call held
            admitted_by = time.monotonic()  # on the event loop's clock; its deadline is at most `timeout` later
            with pytest.raises(InferenceServerException) as raised:
                grpc_client.infer("decoder", inputs)
            assert status(raised) == "UNAVAILABLE" and "capacity" in raised.value.message()
            time.sleep(max(0.0, admitted_by + timeout - time.monotonic()))  # past the deadline, still held
            release.set()
            late = answers.get(timeout=60)
        assert late.status() == "StatusCode.DEADLINE_EXCEEDED" and "CVAE_REQUEST_TIMEOUT_S" in late.message()
        metrics = client.get("/metrics").text
        assert 'cvae_rejected_total{reason="overloaded"} 1.0' in metrics
        assert 'cvae_rejected_total{reason="timeout"} 1.0' in metrics


def test_every_call_is_logged_under_its_request_id(shipped_model, caplog):
    port = free_port()
    app = create_app(Settings(model_dir=shipped_model, grpc_port=port))
    # at INFO until the server has stopped: a refused call's line is written after the client has its answer
    with caplog.at_level(logging.INFO, logger="cvae.access"), TestClient(app) as client:
        wait_ready(client)
        grpc_client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        grpc_client.get_model_metadata("decoder", headers={"x-request-id": "grpc-1"})
        with pytest.raises(InferenceServerException):
            grpc_client.get_model_metadata("nonexistent", headers={"x-request-id": "grpc-2"})
    lines = {r.request_id: r for r in caplog.records if r.name == "cvae.access"}
    assert lines["grpc-1"].path.endswith("/ModelMetadata") and lines["grpc-1"].status == "OK"
    assert lines["grpc-2"].status == "NOT_FOUND" and "Unknown model 'nonexistent'" in lines["grpc-2"].error


def test_grpc_is_off_by_default(shipped_model):
    with running_server(shipped_model, log_format="text") as (base, process):
        listening = {c.laddr.port for c in psutil.Process(process.pid).net_connections() if c.status == "LISTEN"}
    assert listening == {int(base.rsplit(":", 1)[1])}
