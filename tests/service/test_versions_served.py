"""Every version on disk serves unless the operator limits it; a version left out is named in the 404 with
the setting that left it out; /v1/models says which version becomes the default when one arrives."""

from fastapi.testclient import TestClient
from servers import states, wait_for, wait_ready

from bench.swap import place
from service.app import create_app
from service.settings import Settings

BODY = {"images": [[0.0] * 784], "seed": 1, "num_samples": 10}


def version_of(answer) -> str:
    assert answer.status_code == 200, answer.text
    return answer.headers["x-model-version"]


def test_a_version_dropped_in_serves_beside_every_older_one(shipped_model, tmp_path):
    repository = tmp_path / "models"
    for version in ("1.0.0", "2.0.0"):
        place(shipped_model, repository, "mnist-cvae", version)
    with TestClient(create_app(Settings(model_repository=repository, repository_poll_s=0.05))) as client:
        wait_ready(client)
        assert version_of(client.post("/v1/log-likelihood", json=BODY)) == "2.0.0"
        place(shipped_model, repository, "mnist-cvae", "3.0.0")  # as the README's "Adding a version while serving"
        wait_for(lambda: states(client).get(("mnist-cvae", "3.0.0"), {}).get("state") == "ready")
        assert {key: row["state"] for key, row in states(client).items()} == {
            ("mnist-cvae", "1.0.0"): "ready",
            ("mnist-cvae", "2.0.0"): "ready",
            ("mnist-cvae", "3.0.0"): "ready",
        }
        for pinned in ("1.0.0", "2.0.0", "3.0.0"):  # a caller pinned to the oldest keeps it
            assert version_of(client.post("/v1/log-likelihood", params={"version": pinned}, json=BODY)) == pinned
        assert version_of(client.post("/v1/log-likelihood", json=BODY)) == "3.0.0"  # the newest is the default
        rule = client.get("/v1/models").json()["default_rule"]
        assert "'mnist-cvae'" in rule and "newest ready version" in rule and "?version=" in rule


def test_a_version_the_operator_left_out_is_named_in_the_404_with_its_setting(shipped_model, tmp_path):
    repository = tmp_path / "models"
    for version in ("1.0.0", "2.0.0"):
        place(shipped_model, repository, "mnist-cvae", version)
    settings = Settings(model_repository=repository, repository_poll_s=0, keep_versions=1)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        refused = client.post("/v1/log-likelihood", params={"version": "1.0.0"}, json=BODY)
        assert refused.status_code == 404
        error = refused.json()
        assert "version '1.0.0' is on disk but not served" in error["error"]
        assert "CVAE_KEEP_VERSIONS=1" in error["error"]
        assert "/v1/models/mnist-cvae/versions/1.0.0/load" in error["error"]
        assert error["problems"][0]["field"] == "version"
        unknown = client.post("/v1/log-likelihood", params={"version": "7.0.0"}, json=BODY)
        assert unknown.status_code == 404 and "has no version '7.0.0'" in unknown.json()["error"]
        left_out = states(client)[("mnist-cvae", "1.0.0")]
        assert left_out["state"] == "unloaded" and "CVAE_KEEP_VERSIONS=1" in left_out["reason"]
