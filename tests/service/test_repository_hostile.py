"""The model repository under hostile or broken input: manifests naming files outside their folder,
oversized files, broken models sorting first, slow loads, and model control without API keys."""

import asyncio
import hashlib
import json
import os
import threading
import tracemalloc
from functools import partial

import pytest
from fastapi.testclient import TestClient
from servers import states, until, wait_for, wait_ready

from bench.swap import place
from service.app import create_app
from service.engine import runtime
from service.engine.inference import Inference
from service.engine.runtime import load_model, verify_files
from service.failures import ModelLoadError
from service.operations.repository import Repository
from service.settings import Settings

IMAGE = [[0.0] * 28] * 10 + [[0.0] * 10 + [1.0] * 8 + [0.0] * 10] * 8 + [[0.0] * 28] * 10  # a block of ink
BODY = {"images": [IMAGE], "seed": 3, "num_samples": 50}


@pytest.fixture
def repository(shipped_model, tmp_path):
    root = tmp_path / "models"
    place(shipped_model, root, "mnist-cvae", "1.0.0")
    return root


def edit_manifest(folder, **files):
    """Point the manifest's entries `files` (name -> file) elsewhere, keeping their sha256."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for name, file in files.items():
        manifest["files"][name]["file"] = file
    (folder / "manifest.json").write_text(json.dumps(manifest))


def corrupt(path):
    data = bytearray(path.read_bytes())
    data[-10:] = bytes(b ^ 0xFF for b in data[-10:])
    path.write_bytes(bytes(data))


def no_hashing(path):
    raise AssertionError(f"{path} was read")


# --- files outside the version folder


def test_a_manifest_path_through_dotdot_is_refused_and_never_serves(repository, shipped_model):
    """The manifest of 2.0.0 names 1.0.0's encoder (right sha256): refused, and 1.0.0 stays the default."""
    folder = place(shipped_model, repository, "mnist-cvae", "2.0.0")
    (folder / "encoder.onnx").unlink()
    edit_manifest(folder, encoder="../1.0.0/encoder.onnx")
    with pytest.raises(ModelLoadError, match=r"'\.\./1\.0\.0/encoder\.onnx' as its 'encoder' file, a path that leads"):
        verify_files(folder)
    with TestClient(create_app(Settings(model_repository=repository, repository_poll_s=0))) as client:
        wait_ready(client)
        entry = states(client)[("mnist-cvae", "2.0.0")]
        assert entry["state"] == "failed" and "inside its own version folder only" in entry["reason"]
        answer = client.post("/v1/log-likelihood", json=BODY)
        assert answer.status_code == 200 and answer.headers["x-model-version"] == "1.0.0"


def test_a_symlink_out_and_an_absolute_path_are_refused_before_they_are_read(repository, tmp_path, monkeypatch):
    folder = repository / "mnist-cvae" / "1.0.0"
    outside = tmp_path / "outside.onnx"
    (folder / "decoder.onnx").rename(outside)  # the same bytes, so its sha256 would pass
    (folder / "decoder.onnx").symlink_to(outside)
    monkeypatch.setattr(runtime, "sha256", no_hashing)
    with pytest.raises(ModelLoadError, match="'decoder.onnx' as its 'decoder' file, a symlink that points outside"):
        verify_files(folder)
    edit_manifest(folder, decoder="/etc/passwd")
    with pytest.raises(ModelLoadError, match="'/etc/passwd' as its 'decoder' file, an absolute path"):
        verify_files(folder)


def test_a_symlink_inside_the_folder_still_loads(repository):
    folder = repository / "mnist-cvae" / "1.0.0"
    (folder / "decoder.onnx").rename(folder / "decoder-real.onnx")
    (folder / "decoder.onnx").symlink_to("decoder-real.onnx")
    assert load_model(Settings(model_dir=folder)).manifest["files"]["decoder"]["file"] == "decoder.onnx"


# --- file sizes and hashing


def test_a_file_above_the_bound_is_refused_by_its_size_without_being_read(repository, monkeypatch):
    folder = repository / "mnist-cvae" / "1.0.0"
    monkeypatch.setattr(runtime, "sha256", no_hashing)
    with open(folder / "encoder.onnx", "r+b") as file:
        file.truncate(Settings().max_model_file_bytes + 1)  # sparse: 1 GiB and a byte, nothing written
    with pytest.raises(ModelLoadError, match=r"encoder\.onnx is 1073741825 bytes, more than CVAE_MAX_MODEL_FILE_BYTES"):
        load_model(Settings(model_dir=folder))
    with pytest.raises(
        ModelLoadError, match=r"encoder\.onnx is \d+ bytes, more than CVAE_MAX_MODEL_FILE_BYTES \(1000\)"
    ):
        load_model(Settings(model_dir=folder, max_model_file_bytes=1000))


def test_hashing_streams_and_equals_the_hash_of_the_whole_file(tmp_path):
    path = tmp_path / "blob"
    data = os.urandom(3 * runtime.HASH_CHUNK_BYTES + 123)
    path.write_bytes(data)
    assert runtime.sha256(path) == hashlib.sha256(data).hexdigest()
    sparse = tmp_path / "sparse"
    with open(sparse, "wb") as file:
        file.truncate(64 * runtime.HASH_CHUNK_BYTES)
    tracemalloc.start()
    digest = runtime.sha256(sparse)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert digest == hashlib.sha256(bytes(64 * runtime.HASH_CHUNK_BYTES)).hexdigest()
    assert peak < 4 * runtime.HASH_CHUNK_BYTES  # a 64 MiB file, never held whole


# --- broken models and failed versions


def test_a_broken_new_model_sorting_first_leaves_the_default_and_readiness_alone(repository, shipped_model):
    broken = place(shipped_model, repository, "aaa-broken", "1.0.0")
    corrupt(broken / "decoder.onnx")
    settings = Settings(model_repository=repository, repository_poll_s=0.1)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        answer = client.post("/v1/log-likelihood", json=BODY)
        assert answer.status_code == 200 and answer.headers["x-model-name"] == "mnist-cvae"
        assert client.get("/readyz").status_code == 200
        rows = states(client)
        assert rows[("mnist-cvae", "1.0.0")]["default"] and rows[("mnist-cvae", "1.0.0")]["default_model"]
        assert rows[("aaa-broken", "1.0.0")]["state"] == "failed"

        for query, field in (
            ({"model": "aaa-broken"}, "model"),
            ({"model": "aaa-broken", "version": "1.0.0"}, "version"),
        ):
            failed = client.post("/v1/log-likelihood", params=query, json=BODY)
            assert failed.status_code == 404 and "retry-after" not in failed.headers
            error = failed.json()["error"]
            assert "version '1.0.0' failed its checks" in error and "sha256" in error and "retry" not in error
            assert failed.json()["problems"][0]["field"] == field
            assert str(repository) not in error  # no server paths

        another = place(shipped_model, repository, "aab-broken", "1.0.0", rename=False)  # one more, while serving
        corrupt(another / "decoder.onnx")
        another.rename(repository / "aab-broken" / "1.0.0")
        wait_for(lambda: states(client).get(("aab-broken", "1.0.0"), {}).get("state") == "failed")
        assert client.get("/readyz").status_code == 200
        assert client.post("/v1/log-likelihood", json=BODY).headers["x-model-name"] == "mnist-cvae"


def test_readiness_says_failed_without_retry_when_no_version_can_serve(repository):
    settings = Settings(
        model_repository=repository, repository_poll_s=0, default_model="mnist-cvae", model_control=True
    )
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        assert client.post("/v1/models/mnist-cvae/versions/1.0.0/unload").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "failed" and "retry-after" not in ready.headers
        gone = client.post("/v1/log-likelihood", params={"version": "1.0.0"}, json=BODY)
        assert gone.status_code == 404 and "unloaded by request" in gone.json()["error"]


# --- loading without holding up requests


def held_verification(monkeypatch, version):
    """Hold the checks of `version`'s files until the test sets the second Event returned; the first is
    set once they have begun."""
    started, release, verify = threading.Event(), threading.Event(), runtime.verify_files

    def held(model_dir, *args):
        if model_dir.name == version:
            started.set()
            if not release.wait(60):
                raise TimeoutError("the test never let the load go on")
        return verify(model_dir, *args)

    monkeypatch.setattr(runtime, "verify_files", held)
    return started, release


def test_a_slow_load_holds_up_no_request_to_a_ready_version(repository, shipped_model, monkeypatch):
    started, release = held_verification(monkeypatch, "2.0.0")
    settings = Settings(model_repository=repository, repository_poll_s=0.1, model_control=True)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        incoming = place(shipped_model, repository, "mnist-cvae", "2.0.0", rename=False)
        incoming.rename(repository / "mnist-cvae" / "2.0.0")
        assert started.wait(60)
        try:  # all of this is answered while 2.0.0's load is held: none of it waits for that load
            waited = client.post("/v1/log-likelihood", params={"version": "2.0.0"}, json=BODY)
            assert waited.status_code == 503 and waited.headers["retry-after"] == "1"
            assert "version '2.0.0' is still loading; retry shortly" in waited.json()["error"]
            answer = client.post("/v1/log-likelihood", json=BODY)
            assert answer.status_code == 200 and answer.headers["x-model-version"] == "1.0.0"
            assert client.get("/readyz").status_code == 200
            reloaded = client.post("/v1/models/mnist-cvae/versions/1.0.0/load")  # a load of another version
            assert reloaded.status_code == 200 and reloaded.json()["state"] == "ready"
            assert states(client)[("mnist-cvae", "2.0.0")]["state"] == "loading"  # not waited for
        finally:
            release.set()
        wait_for(lambda: states(client)[("mnist-cvae", "2.0.0")]["state"] == "ready")


def test_a_version_unloaded_while_it_loads_is_dropped(repository, shipped_model, monkeypatch):
    started, release = held_verification(monkeypatch, "2.0.0")

    async def scenario():
        settings = Settings(model_repository=repository, repository_poll_s=0)
        repo = Repository(settings, partial(Inference.open, settings=settings))
        await repo.start()
        place(shipped_model, repository, "mnist-cvae", "2.0.0")
        scan = asyncio.create_task(repo.refresh())
        await until(started.is_set)
        loading = await repo.unload("mnist-cvae", "2.0.0")  # while its load is held
        release.set()
        await scan
        assert loading.state == "unloaded" and loading.inference is None
        assert ("mnist-cvae", "2.0.0") not in repo.serving and repo.resolve().version == "1.0.0"
        await repo.stop()

    try:
        asyncio.run(scenario())
    finally:
        release.set()


# --- model control


def test_load_and_unload_are_closed_without_keys_and_open_with_the_setting(repository):
    load, unload = "/v1/models/mnist-cvae/versions/1.0.0/load", "/v1/models/mnist-cvae/versions/1.0.0/unload"
    with TestClient(create_app(Settings(model_repository=repository, repository_poll_s=0))) as closed:
        wait_ready(closed)
        for path in (load, unload, "/v1/models/fashion/versions/1/load"):
            refused = closed.post(path)
            assert refused.status_code == 403 and "CVAE_MODEL_CONTROL=true" in refused.json()["error"]
        assert states(closed)[("mnist-cvae", "1.0.0")]["state"] == "ready"
    settings = Settings(model_repository=repository, repository_poll_s=0, model_control=True)
    with TestClient(create_app(settings)) as opened:
        wait_ready(opened)
        unknown = opened.post("/v1/models/fashion/versions/1/load")
        assert unknown.status_code == 404 and unknown.json()["problems"][0]["field"] == "name"
        missing = opened.post("/v1/models/mnist-cvae/versions/7/unload")
        assert missing.status_code == 404 and missing.json()["problems"][0]["field"] == "version"
        assert opened.post(load).json()["state"] == "ready"
        assert opened.post(unload).status_code == 200
        wait_for(lambda: states(opened)[("mnist-cvae", "1.0.0")]["state"] == "unloaded")
