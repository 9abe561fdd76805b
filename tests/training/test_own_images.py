"""Your own images end to end: a folder of 12x16 greyscale images in three named classes is trained on with
`cvae train --data`, exported with `cvae export`, and served by every /v1 endpoint."""

import numpy as np
import pytest

pytest.importorskip("torch")

from fastapi.testclient import TestClient  # noqa: E402
from servers import wait_ready  # noqa: E402
from synthetic import CLASSES, SHAPE, garments  # noqa: E402

from service.app import create_app  # noqa: E402
from service.settings import Settings  # noqa: E402
from training.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    data = garments(root / "garments")
    checkpoint = root / "checkpoint.pt"
    tiny = ["--latent-dim", "2", "--hidden-dims", "16", "--epochs", "2", "--batch-size", "16"]
    tiny += ["--num-samples", "2", "--val-size", "9"]
    assert main(["train", "--data", str(data), "--out", str(checkpoint), *tiny]) == 0
    model = root / "repository" / "garments-cvae" / "1.0.0"
    assert main(["export", str(checkpoint), "--out-dir", str(model)]) == 0
    return model


def test_the_manifest_says_the_size_the_classes_and_the_name(exported):
    import json

    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["name"] == "garments-cvae" and manifest["image_shape"] == list(SHAPE)
    assert manifest["class_names"] == list(CLASSES) and manifest["num_classes"] == 3


def test_every_v1_endpoint_serves_the_model(exported):
    image = np.zeros(SHAPE)
    image[4:8] = 1.0  # a coat's band
    with TestClient(create_app(Settings(model_dir=exported))) as client:
        wait_ready(client)
        model = client.get("/v1/model").json()
        assert model["image_shape"] == list(SHAPE) and model["class_names"] == list(CLASSES)
        assert [m["model"] for m in client.get("/v1/models").json()["models"]] == ["garments-cvae"]
        samples = client.post("/v1/samples", json={"n": 2, "y": 2, "seed": 0}).json()["samples"]
        assert len(samples) == 2 and len(samples[0]["mean"]) == SHAPE[0] * SHAPE[1]
        png = client.get("/v1/samples.png", params={"n": 4, "y": 1, "seed": 0})
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        z = [[0.0, 0.0], [1.0, -1.0]]
        path = client.post("/v1/interpolations", json={"z_from": z[0], "z_to": z[1], "y": 0, "steps": 3}).json()
        assert len(path["samples"]) == 3
        body = {"images": [image.tolist()], "num_samples": 16, "seed": 0}
        encoded = client.post("/v1/encode", json={"images": [image.tolist()], "y": 1})
        assert encoded.status_code == 200, encoded.text
        scored = client.post("/v1/log-likelihood", json=body)
        assert scored.status_code == 200 and np.isfinite(scored.json()["results"][0]["log_px"])
        classified = client.post("/v1/classify", json=body)
        assert classified.status_code == 200, classified.text
        answer = classified.json()
        assert answer["class_names"] == list(CLASSES) and len(answer["results"][0]["probs"]) == 3
        wrong = client.post("/v1/classify", json={"images": [np.zeros((28, 28)).tolist()]})
        assert wrong.status_code == 422 and "send 192 numbers or 12 rows of 16 numbers." in wrong.text
        assert "preprocess" not in wrong.text  # MNIST's preparation is offered to models of MNIST only
        drawn = client.post("/v1/classify", json={"images": [np.zeros((40, 40)).tolist()], "preprocess": "mnist"})
        assert drawn.status_code == 422 and drawn.json()["problems"][0]["field"] == "preprocess"
        assert "garments-cvae was not trained on MNIST's digits" in drawn.text


def test_two_models_serve_side_by_side_and_name_their_graphs_apart(exported, shipped_model):
    """Beside a model of MNIST, which stays the default though its name sorts later, each model's /v1 answers
    name it, and the Open Inference Protocol names its graphs MODEL-GRAPH (the bare graph names are the
    default model's)."""
    import json
    import shutil

    repository = exported.parents[1]
    version = json.loads((shipped_model / "manifest.json").read_text())["version"]
    shutil.copytree(shipped_model, repository / "mnist-cvae" / version)
    settings = Settings(model_repository=repository, repository_poll_s=0)  # the default: mnist-cvae, not the first
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        assert {m["model"] for m in client.get("/v1/models").json()["models"]} == {"garments-cvae", "mnist-cvae"}
        own = client.post("/v1/samples", params={"model": "garments-cvae"}, json={"n": 1, "seed": 0}).json()
        digit = client.post("/v1/samples", json={"n": 1, "seed": 0}).json()
        assert own["model"] == "garments-cvae" and len(own["samples"][0]["mean"]) == SHAPE[0] * SHAPE[1]
        assert digit["model"] == "mnist-cvae" and len(digit["samples"][0]["mean"]) == 784
        outputs = {
            name: client.get(f"/v2/models/{name}").json()["outputs"][0]["shape"]
            for name in ("decoder", "mnist-cvae-decoder", "garments-cvae-decoder")
        }
        assert outputs == {"decoder": [-1, 784], "mnist-cvae-decoder": [-1, 784], "garments-cvae-decoder": [-1, 192]}
        z = {"name": "z", "shape": [1, 2], "datatype": "FP32", "data": [0.0, 0.0]}
        y = {"name": "y", "shape": [1, 3], "datatype": "FP32", "data": [0, 1, 0]}
        answer = client.post("/v2/models/garments-cvae-decoder/infer", json={"inputs": [z, y]})
        assert answer.status_code == 200 and answer.json()["outputs"][0]["shape"] == [1, 192]
