"""The model repository: listing, pinning requests to versions, swaps, refusals, load and unload."""

import asyncio
import json
import shutil
from functools import partial

import numpy as np
import pytest
from fastapi.testclient import TestClient
from servers import states, until, wait_for, wait_ready

from bench.swap import place
from service.app import create_app
from service.engine.inference import Inference
from service.failures import NotServed
from service.operations.repository import Repository
from service.operations.versions import version_key
from service.settings import Settings

IMAGE = [[0.0] * 28] * 10 + [[0.0] * 10 + [1.0] * 8 + [0.0] * 10] * 8 + [[0.0] * 28] * 10  # a block of ink


def add_version(repository, source, version, prior=None, name="mnist-cvae", hidden=False):
    """Copy the model `source` into repository/name/version (via a hidden folder and a rename, as the
    README says), its manifest saying that version and, when given, another class prior."""
    changes = {"description": f"test copy {version}", **({"class_prior": prior} if prior is not None else {})}
    return place(source, repository, name, version, changes, rename=not hidden)


UNIFORM = [0.1] * 10


@pytest.fixture
def repository(shipped_model, tmp_path):
    root = tmp_path / "models"
    add_version(root, shipped_model, "1.0.0")
    return root


def log_px(client, **query) -> tuple[float, str]:
    answer = client.post("/v1/log-likelihood", params=query, json={"images": [IMAGE], "seed": 3, "num_samples": 50})
    assert answer.status_code == 200, answer.text
    return answer.json()["results"][0]["log_px"], answer.headers["x-model-version"]


def test_versions_order_by_their_numbers():
    assert sorted(["10", "1.2", "1.0.1", "2", "1"], key=version_key) == ["1", "1.0.1", "1.2", "2", "10"]
    with pytest.raises(ValueError, match="not a number"):
        version_key("latest")


def test_lists_versions_and_pins_requests_to_them(repository, shipped_model):
    add_version(repository, shipped_model, "2.0.0", prior=UNIFORM)
    (repository / "mnist-cvae" / "latest").mkdir()
    with TestClient(create_app(Settings(model_repository=repository, repository_poll_s=0))) as client:
        wait_ready(client)
        listing = client.get("/v1/models").json()
        models = {m["version"]: m for m in listing["models"]}
        assert {v: m["state"] for v, m in models.items()} == {"1.0.0": "ready", "2.0.0": "ready"}
        assert models["2.0.0"]["default"] and not models["1.0.0"]["default"]
        assert models["2.0.0"]["description"] == "test copy 2.0.0"
        assert "not a number" in listing["refused"]["mnist-cvae/latest"]  # no server paths in answers
        assert str(repository) not in json.dumps(listing)

        newest, version = log_px(client)
        assert version == "2.0.0"
        old, version = log_px(client, version="1.0.0")
        assert version == "1.0.0"
        # The same image, seed and samples; only the prior differs: log p(x) moves by exactly what the
        # priors' mixture says, so each answer came from its own version's manifest.
        body = {"images": [IMAGE], "seed": 3, "num_samples": 50, "include": ["estimates"]}
        per_class = client.post("/v1/log-likelihood", params={"version": "1.0.0"}, json=body).json()
        per_class = per_class["results"][0]["log_px_y"]
        expected = np.logaddexp.reduce(np.array(per_class) + np.log(UNIFORM))
        assert newest == pytest.approx(expected, abs=1e-4) and abs(newest - old) > 1e-3
        assert client.get("/v1/model", params={"version": "1.0.0"}).json()["version"] == "1.0.0"
        assert client.get("/v1/model").json()["class_prior"] == UNIFORM

        missing = client.post("/v1/classify", params={"version": "9.9"}, json={"images": [IMAGE]})
        assert missing.status_code == 404
        assert missing.json()["problems"][0]["field"] == "version" and "1.0.0" in missing.json()["error"]
        unknown = client.get("/v1/model", params={"model": "fashion"})
        assert unknown.status_code == 404 and "mnist-cvae" in unknown.json()["error"]


def test_open_inference_protocol_serves_every_version(repository, shipped_model):
    add_version(repository, shipped_model, "2.0.0", prior=UNIFORM)
    with TestClient(create_app(Settings(model_repository=repository, repository_poll_s=0))) as client:
        wait_ready(client)
        assert client.get("/v2/models/scorer").json()["versions"] == ["1.0.0", "2.0.0"]
        assert client.get("/v2/models/mnist-cvae-decoder/versions/1.0.0/ready").json()["ready"] is True
        body = {
            "inputs": [
                {"name": "z", "shape": [1, 32], "datatype": "FP32", "data": [0.0] * 32},
                {"name": "y", "shape": [1, 10], "datatype": "FP32", "data": [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]},
            ]
        }
        for path, version in (("decoder", "2.0.0"), ("decoder/versions/1.0.0", "1.0.0")):
            answer = client.post(f"/v2/models/{path}/infer", json=body)
            assert answer.status_code == 200 and answer.json()["model_version"] == version
        assert client.get("/v2/models/decoder/versions/3.0.0").status_code == 404
        assert client.get("/v2/models/fashion-decoder").status_code == 404


def test_a_new_version_swaps_in_and_a_corrupt_one_never_takes_traffic(repository, shipped_model, caplog):
    settings = Settings(model_repository=repository, repository_poll_s=0.1)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        assert log_px(client)[1] == "1.0.0"

        staging = add_version(repository, shipped_model, "2.0.0", hidden=True)
        decoder = staging / "decoder.onnx"
        good = decoder.read_bytes()
        decoder.write_bytes(good[:-10] + bytes(b ^ 0xFF for b in good[-10:]))
        staging.rename(repository / "mnist-cvae" / "2.0.0")
        wait_for(lambda: states(client).get(("mnist-cvae", "2.0.0"), {}).get("state") == "failed")
        entry = states(client)[("mnist-cvae", "2.0.0")]
        assert "does not match the sha256" in entry["reason"]
        assert "does not match the sha256" in caplog.text
        assert log_px(client)[1] == "1.0.0"  # the old version keeps serving
        pinned = client.post("/v1/classify", params={"version": "2.0.0"}, json={"images": [IMAGE]})
        assert pinned.status_code == 404 and "sha256" in pinned.json()["error"]
        assert client.get("/readyz").status_code == 200

        (repository / "mnist-cvae" / "2.0.0" / "decoder.onnx").write_bytes(good)  # mended: tried again
        wait_for(lambda: states(client)[("mnist-cvae", "2.0.0")]["state"] == "ready")
        assert log_px(client)[1] == "2.0.0"
        assert log_px(client, version="1.0.0")[1] == "1.0.0"  # keep_versions = 2: both serve
        metrics = client.get("/metrics").text
        assert 'cvae_model_version_state{name="mnist-cvae",state="ready",version="2.0.0"} 1.0' in metrics
        assert 'cvae_model_version_in_flight{name="mnist-cvae",version="1.0.0"} 0.0' in metrics


def test_keep_versions_unloads_the_oldest_and_removed_folders_stop_serving(repository, shipped_model):
    add_version(repository, shipped_model, "2.0.0")
    settings = Settings(model_repository=repository, repository_poll_s=0.1, keep_versions=1)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        held_back = states(client)[("mnist-cvae", "1.0.0")]  # never loaded, and listed with the reason
        assert held_back["state"] == "unloaded" and "CVAE_KEEP_VERSIONS=1" in held_back["reason"]
        add_version(repository, shipped_model, "3.0.0")
        wait_for(lambda: states(client).get(("mnist-cvae", "3.0.0"), {}).get("state") == "ready")
        wait_for(lambda: states(client)[("mnist-cvae", "2.0.0")]["state"] == "unloaded")
        assert log_px(client)[1] == "3.0.0"
        shutil.rmtree(repository / "mnist-cvae" / "3.0.0")  # the newest goes: the next one comes back
        wait_for(lambda: states(client).get(("mnist-cvae", "2.0.0"), {}).get("state") == "ready")
        assert log_px(client)[1] == "2.0.0" and client.get("/readyz").status_code == 200


def test_load_and_unload_by_request_need_the_key(repository, shipped_model):
    add_version(repository, shipped_model, "2.0.0")
    settings = Settings(model_repository=repository, repository_poll_s=0, keep_versions=1, api_keys="k1")
    key = {"Authorization": "Bearer k1"}
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        load = "/v1/models/mnist-cvae/versions/1.0.0/load"
        assert client.post(load).status_code == 401
        assert client.get("/v1/models").status_code == 401
        loaded = client.post(load, headers=key)
        assert loaded.status_code == 200 and loaded.json()["state"] == "ready"
        assert states(client, key)[("mnist-cvae", "1.0.0")]["pinned"] is True
        assert log_px_with(client, key, version="1.0.0") == "1.0.0"

        unload = "/v1/models/mnist-cvae/versions/2.0.0/unload"
        assert client.post(unload).status_code == 401
        assert client.post(unload, headers=key).status_code == 200
        wait_for(lambda: states(client, key)[("mnist-cvae", "2.0.0")]["state"] == "unloaded")
        assert log_px_with(client, key) == "1.0.0"  # the newest left: 1.0.0 answers now
        gone = client.post("/v1/models/mnist-cvae/versions/7/load", headers=key)
        assert gone.status_code == 404 and "has no version '7'" in gone.json()["error"]


def log_px_with(client, headers, **query) -> str:
    answer = client.post("/v1/log-likelihood", params=query, headers=headers, json={"images": [IMAGE], "seed": 1})
    assert answer.status_code == 200, answer.text
    return answer.headers["x-model-version"]


def test_a_retired_version_finishes_its_requests_first(repository, shipped_model):
    """A request that holds the old version keeps it loaded through a swap; it stops once released."""

    async def scenario():
        settings = Settings(model_repository=repository, repository_poll_s=0, keep_versions=1)
        repo = Repository(settings, partial(Inference.open, settings=settings))
        await repo.start()
        old = repo.acquire()
        add_version(repository, shipped_model, "2.0.0")
        await repo.refresh()
        assert repo.resolve().version == "2.0.0" and old.state == "unloading"
        logits = await old.inference.calls.decode(np.zeros((1, 32)), np.zeros(1, dtype=np.int64))
        assert logits.shape == (1, 784)  # the old version still answers its request
        repo.release(old)
        await until(lambda: old.state == "unloaded")
        with pytest.raises(NotServed):
            repo.resolve(version="1.0.0")
        await repo.stop()

    asyncio.run(scenario())


def test_folder_and_manifest_must_agree(repository, shipped_model):
    wrong = add_version(repository, shipped_model, "2.0.0")
    manifest = json.loads((wrong / "manifest.json").read_text())
    manifest["version"] = "5.0.0"
    (wrong / "manifest.json").write_text(json.dumps(manifest))
    with TestClient(create_app(Settings(model_repository=repository, repository_poll_s=0))) as client:
        wait_ready(client)
        entry = states(client)[("mnist-cvae", "2.0.0")]
        assert entry["state"] == "failed" and "says mnist-cvae 5.0.0" in entry["reason"]
        assert log_px(client)[1] == "1.0.0"


def test_the_shipped_repository_answers_each_version_as_its_own_directory_would():
    """Pinned to a version of the shipped repository, a request gets that version's manifest figures and
    the same answer as a service of that version's directory alone."""
    from service.settings import SHIPPED_REPOSITORY

    body = {"images": [IMAGE], "seed": 5, "num_samples": 40}
    with TestClient(create_app(Settings(repository_poll_s=0))) as shipped:
        wait_ready(shipped)
        rows = shipped.get("/v1/models").json()["models"]
        assert rows and all(row["state"] == "ready" for row in rows)
        newest = max((row for row in rows if row["model"] == "mnist-cvae"), key=lambda row: version_key(row["version"]))
        assert newest["default"] and sum(row["default"] for row in rows) == 1
        for row in rows:
            folder = SHIPPED_REPOSITORY / row["model"] / row["version"]
            manifest = json.loads((folder / "manifest.json").read_text())
            pin = {"model": row["model"], "version": row["version"]}
            described = shipped.get("/v1/model", params=pin).json()
            assert described["metrics"]["nll"] == manifest["metrics"]["nll"]
            pinned = shipped.post("/v1/classify", params=pin, json=body)
            with TestClient(create_app(Settings(model_dir=folder))) as alone:
                wait_ready(alone)
                assert pinned.json()["results"] == alone.post("/v1/classify", json=body).json()["results"]
