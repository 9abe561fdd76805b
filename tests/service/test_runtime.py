"""Start-up checks: integrity against the manifest, and the choice of execution providers."""

import json
import shutil

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.engine.runtime import load_model, requested_providers
from service.failures import ModelLoadError
from service.operations.versions import is_ready
from service.settings import Settings


@pytest.fixture
def model_copy(shipped_model, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(shipped_model, target)
    return target


def test_auto_providers_end_with_cpu():
    assert requested_providers("auto")[-1] == "CPUExecutionProvider"


def test_unknown_provider_is_refused():
    with pytest.raises(ModelLoadError, match="Unknown execution provider"):
        requested_providers("WarpDriveExecutionProvider")


def test_strict_setting_refuses_an_inactive_gpu_provider(model_copy):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA: the provider would be active")
    settings = Settings(
        model_dir=model_copy, providers="CUDAExecutionProvider,CPUExecutionProvider", strict_providers=True
    )
    with pytest.raises(ModelLoadError, match="CUDAExecutionProvider"):
        load_model(settings)
    relaxed = load_model(Settings(model_dir=model_copy, providers="CUDAExecutionProvider,CPUExecutionProvider"))
    assert relaxed.active_providers == ["CPUExecutionProvider"]


def test_corrupt_file_stops_start_up(model_copy):
    path = model_copy / "decoder.onnx"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="decoder.onnx does not match the sha256"):
        load_model(Settings(model_dir=model_copy))
    app = create_app(Settings(model_dir=model_copy))
    with pytest.raises(ModelLoadError):
        with TestClient(app):
            pass
    assert not is_ready(app)


def test_missing_file_and_manifest(model_copy):
    (model_copy / "scorer.onnx").unlink()
    with pytest.raises(ModelLoadError, match="scorer.onnx is missing"):
        load_model(Settings(model_dir=model_copy))
    (model_copy / "manifest.json").unlink()
    with pytest.raises(ModelLoadError, match="No manifest.json"):
        load_model(Settings(model_dir=model_copy))


def test_manifest_that_disagrees_with_the_graphs(model_copy):
    manifest = json.loads((model_copy / "manifest.json").read_text())
    manifest["files"]["decoder"]["outputs"]["logits"] = ["N", 100]
    (model_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="decoder.onnx 'logits' has shape"):
        load_model(Settings(model_dir=model_copy))


def test_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CVAE_PORT", "9123")
    monkeypatch.setenv("CVAE_MAX_IMAGES", "7")
    monkeypatch.setenv("CVAE_MODEL_DIR", str(tmp_path))
    settings = Settings()
    assert (settings.port, settings.max_images, settings.model_dir) == (9123, 7, tmp_path)


def test_idle_onnx_runtime_threads_do_not_spin(shipped_model):
    from service.engine.runtime import load_model
    from service.settings import Settings

    def spinning(settings) -> str:
        session = load_model(settings).sessions["scorer"]
        return session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")

    assert spinning(Settings(model_dir=shipped_model)) == "0"
