import io

import numpy as np
from PIL import Image


def test_seeded_samples_are_reproducible_and_fresh_without_seed(client):
    a = client.post("/v1/samples", json={"n": 3, "seed": 7, "binary": True}).json()
    b = client.post("/v1/samples", json={"n": 3, "seed": 7, "binary": True}).json()
    assert a == b and a["seed"] == 7
    c = client.post("/v1/samples", json={"n": 3}).json()
    d = client.post("/v1/samples", json={"n": 3}).json()
    assert c["seed"] != d["seed"] and c["samples"] != d["samples"]
    again = client.post("/v1/samples", json={"n": 3, "seed": c["seed"]}).json()
    assert again == c


def test_sample_fields_and_ranges(client, manifest):
    body = client.post("/v1/samples", json={"n": 4, "seed": 1, "binary": True}).json()
    assert len(body["samples"]) == 4
    for s in body["samples"]:
        assert 0 <= s["y"] < manifest["num_classes"]
        assert len(s["z"]) == manifest["latent_dim"]
        mean = np.array(s["mean"])
        assert mean.shape == (784,) and mean.min() >= 0 and mean.max() <= 1
        assert set(s["x"]) <= {0, 1}
    without = client.post("/v1/samples", json={"n": 1, "seed": 1}).json()
    assert without["samples"][0]["x"] is None


def test_class_prior_drives_unconditional_classes(client, manifest):
    body = client.post("/v1/samples", json={"n": 500, "seed": 3}).json()
    counts = np.bincount([s["y"] for s in body["samples"]], minlength=10)
    assert (counts > 0).all()  # every class is drawn from the prior


def test_conditional_on_class_and_on_z(client, manifest):
    body = client.post("/v1/samples", json={"n": 5, "y": 4, "seed": 2}).json()
    assert [s["y"] for s in body["samples"]] == [4] * 5
    z = [[0.0] * manifest["latent_dim"], [1.5] * manifest["latent_dim"]]
    given = client.post("/v1/samples", json={"z": z, "y": 8}).json()
    assert [s["z"] for s in given["samples"]] == z
    assert given["samples"][0]["mean"] != given["samples"][1]["mean"]
    again = client.post("/v1/samples", json={"z": z, "y": 8, "seed": 99}).json()
    assert [s["mean"] for s in again["samples"]] == [s["mean"] for s in given["samples"]]


def test_interpolation_ends_are_the_decoded_end_points(client, manifest):
    d = manifest["latent_dim"]
    z_from, z_to = [-1.0] * d, [1.0] * d
    path = client.post("/v1/interpolations", json={"z_from": z_from, "z_to": z_to, "steps": 5, "y": 2}).json()
    assert len(path["samples"]) == 5
    ends = client.post("/v1/samples", json={"z": [z_from, z_to], "y": 2}).json()["samples"]
    assert np.allclose(path["samples"][0]["mean"], ends[0]["mean"])
    assert np.allclose(path["samples"][-1]["mean"], ends[1]["mean"])
    linear = client.post(
        "/v1/interpolations", json={"z_from": z_from, "z_to": z_to, "steps": 3, "y": 2, "spherical": False}
    ).json()
    assert np.allclose(linear["samples"][1]["z"], 0.0)


def test_png_grid(client):
    response = client.get("/v1/samples.png", params={"y": 3, "n": 16, "seed": 1})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.size == (4 * 30 * 2, 4 * 30 * 2)
    assert client.get("/v1/samples.png", params={"y": 3, "n": 16, "seed": 1}).content == response.content


def test_sampling_errors_name_the_field(client, manifest):
    d = manifest["latent_dim"]
    cases = [
        ({"y": 10}, "y"),
        ({"y": -1}, "y"),
        ({"z": [[0.0] * (d - 1)]}, "z[0]"),
        ({"z": [[0.0] * d], "n": 3}, "n"),
        ({"n": 0}, "n"),
        ({"n": 10_000}, "n"),
        ({"z": [[1e300] * d]}, "z"),
        ({"seed": -5}, "seed"),
    ]
    for body, field in cases:
        response = client.post("/v1/samples", json=body)
        assert response.status_code == 422, body
        assert response.json()["problems"][0]["field"] == field, (body, response.json())
    bad_png = client.get("/v1/samples.png", params={"y": 11})
    assert bad_png.status_code == 422 and bad_png.json()["problems"][0]["field"] == "y"
    renamed = client.get("/v1/samples.png", params={"class": 3})  # its name before: refused, naming the new one
    assert renamed.status_code == 422 and "y" in renamed.json()["problems"][0]["message"]
    unknown = client.post("/v1/samples?colour=red", json={})
    assert unknown.status_code == 422 and unknown.json()["problems"][0]["field"] == "colour"
    too_many = client.get("/v1/samples.png", params={"n": 5000})
    assert too_many.status_code == 422
