"""The Python client against the real server."""

import asyncio
import json
import threading
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from servers import held_serve_command, running_server, wait_for

from client import AsyncClient, Client, ClientError


@pytest.fixture(scope="module")
def server(shipped_model):
    with running_server(shipped_model, log_format="text") as (base, _):
        yield base


def test_sample_score_classify_return_numpy(server):
    with Client(server) as cvae:
        samples = cvae.sample(n=4, y=7, seed=1, binary=True)
        assert samples.mean.shape == (4, 28, 28) and samples.x.shape == (4, 28, 28)
        assert (samples.y == 7).all() and samples.seed == 1
        scores = cvae.log_likelihood(samples.x, num_samples=50, seed=4, include=["estimates"])
        assert scores.log_px.shape == (4,) and scores.log_px_y.shape == (4, 10) and (scores.log_px < 0).all()
        assert (scores.model, scores.version) == ("mnist-cvae", cvae.model()["version"])
        lean = cvae.log_likelihood(samples.x, num_samples=50, seed=4)  # the same answer without diagnostics
        assert lean.log_px_y is None and lean.tolerance_met is None and np.array_equal(lean.log_px, scores.log_px)
        classes = cvae.classify(samples.x, num_samples=50, seed=4)
        assert classes.probs.shape == (4, 10) and np.allclose(classes.probs.sum(1), 1)
        assert np.allclose(classes.log_px, scores.log_px)
        posteriors = cvae.encode(samples.x[:2])
        latent = cvae.model()["latent_dim"]
        assert posteriors.mu.shape == (2, 10, latent) and (posteriors.std > 0).all()
        path = cvae.interpolate(np.zeros(latent), np.ones(latent), steps=5, y=3)
        assert path.mean.shape == (5, 28, 28)
        one = cvae.classify(samples.x[0])  # a single 28x28 image
        assert one.probs.shape == (1, 10)
        precise = cvae.log_likelihood(
            samples.x[:2], num_samples=64, tolerance=0.3, max_num_samples=2048, include=["estimates", "x"]
        )
        assert precise.pareto_k.shape == (2, 10) and precise.log_px_y_std_error.shape == (2, 10)
        assert np.array_equal(precise.tolerance_met, (precise.log_px_std_error <= 0.3) & precise.log_px_reliable)
        assert np.array_equal(precise.x, samples.x[:2])  # binary pixels are scored as sent
        blank = cvae.classify(np.zeros((28, 28)), num_samples=20)
        assert blank.warnings[0] == ["nearly_empty"] and scores.warnings == [[], [], [], []]  # their codes
        assert blank.body["results"][0]["warnings"][0]["message"]  # the answer as sent
        assert blank.out_of_distribution_flagged[0] and blank.abstained[0]
        assert "out_of_distribution" in blank.abstain_reasons[0] and 0 < blank.out_of_distribution_p_value[0] <= 1
        assert scores.out_of_distribution_p_value.shape == (4,) and scores.out_of_distribution_flagged.dtype == bool
        assert scores.elbo_value is None and scores.entropy.shape == (4,)  # no "elbo" asked for; "estimates" was
        with pytest.raises(AttributeError, match="out_of_distribution_flagged"):
            _ = scores.ood_flagged  # not a field the service publishes: the error lists those it does


def test_async_client_gives_the_same_answers(server):
    async def run():
        async with AsyncClient(server) as cvae:
            samples = await cvae.sample(n=2, seed=3, binary=True)
            return samples, await cvae.classify(samples.x, num_samples=30, seed=5)

    samples, classes = asyncio.run(run())
    with Client(server) as cvae:
        again = cvae.classify(samples.x, num_samples=30, seed=5)
    assert np.array_equal(classes.probs, again.probs)


def test_4xx_raises_client_error_naming_the_field(server):
    with Client(server) as cvae:
        with pytest.raises(ClientError) as caught:
            cvae.sample(y=12)
        assert caught.value.status == 422 and caught.value.problems[0]["field"] == "y"
        with pytest.raises(ClientError, match="num_samples"):
            cvae.classify(np.zeros((28, 28)), num_samples=10**9)


def test_503_is_retried_after_retry_after(shipped_model, tmp_path, monkeypatch):
    hold = tmp_path / "hold"
    serve = held_serve_command(hold)
    with running_server(shipped_model, serve=serve, log_format="text", max_in_flight=1) as (base, _):
        hold.touch()  # from now on the scorer's calls wait
        body = {"images": [[0.0] * 784], "num_samples": 10, "adaptive": False}
        held = threading.Thread(target=lambda: httpx.post(f"{base}/v1/log-likelihood", json=body, timeout=120))
        held.start()
        waits = []

        def sleep(seconds):  # the client's wait before it tries again: the held request is let go meanwhile
            waits.append(seconds)
            hold.unlink(missing_ok=True)
            held.join()

        try:
            wait_for(hold.with_name("hold.held").exists)  # its scorer call waits: the server is full now
            assert httpx.post(f"{base}/v1/samples", json={"n": 1}).status_code == 503
            monkeypatch.setattr("client.api.time", SimpleNamespace(sleep=sleep))
            with Client(base, retries=20) as cvae:
                samples = cvae.sample(n=1, seed=0)
        finally:
            hold.unlink(missing_ok=True)
            held.join()
        assert samples.mean.shape == (1, 28, 28)
        assert waits == [1.0]  # one retry, after the Retry-After the 503 carried (no header: 0.5 s)
        with Client(base, retries=0) as impatient:
            assert impatient.sample(n=1).mean.shape == (1, 28, 28)


def test_429_past_the_callers_rate_is_retried_after_retry_after(shipped_model):
    with running_server(shipped_model, log_format="text", caller_rate="2/second") as (base, _):
        answers = [httpx.post(f"{base}/v1/samples", json={"n": 1}) for _ in range(3)]
        assert [a.status_code for a in answers][-1] == 429 and answers[-1].headers["retry-after"] == "1"
        with Client(base, retries=5, max_retry_wait=2.0) as cvae:
            assert cvae.sample(n=1, seed=0).mean.shape == (1, 28, 28)
        with Client(base, retries=0) as impatient, pytest.raises(ClientError, match="CVAE_CALLER_RATE"):
            for _ in range(3):  # no more than 2 a second pass
                impatient.sample(n=1)


def test_the_client_takes_image_shape_and_class_names_from_the_model():
    import httpx

    seen = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/model":
            return httpx.Response(200, json={"image_shape": [2, 3], "class_names": ["cat", "dog"]})
        body = json.loads(request.content)
        seen.append(body)
        if request.url.path == "/v1/samples":
            sample = {"y": 1, "z": [0.0], "mean": [0.5] * 6, "x": None}
            return httpx.Response(200, json={"seed": 1, "samples": [sample]})
        result = {
            "probs": [0.2, 0.8],
            "predicted": 1,
            "probability": 0.8,
            "log_px": -3.0,
            "log_px_std_error": 0.1,
            "log_px_reliable": True,
            "out_of_distribution": None,
            "abstained": False,
            "abstain_reasons": [],
            "warnings": [],
        }
        answer = {"model": "pets", "version": "1", "class_names": ["cat", "dog"], "seed": 5}
        return httpx.Response(200, json={**answer, "results": [result] * len(body["images"])})

    with Client("http://model.test", transport=httpx.MockTransport(answer)) as cvae:
        assert cvae.sample(n=1).mean.shape == (1, 2, 3)
        classes = cvae.classify(np.zeros((3, 2, 3)))
        assert classes.predicted_names == ["dog"] * 3 and classes.out_of_distribution_p_value is None  # no calibration
        assert [len(image) for image in seen[-1]["images"]] == [6, 6, 6]
        with pytest.raises(ValueError, match="2x3"):
            cvae.classify(np.zeros((28, 28)))


def test_a_pinned_client_sends_its_model_and_version_on_every_call():
    import httpx

    queries = []

    def answer(request: httpx.Request) -> httpx.Response:
        queries.append((request.url.path, dict(request.url.params)))
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"models": [{"model": "digits", "version": "2"}], "refused": {}})
        if request.url.path == "/v1/model":
            return httpx.Response(200, json={"image_shape": [2, 3], "class_names": ["a", "b"]})
        sample = {"y": 1, "z": [0.0], "mean": [0.5] * 6, "x": None}
        return httpx.Response(200, json={"seed": 1, "samples": [sample]})

    with Client("http://model.test", transport=httpx.MockTransport(answer), model="digits", version="2") as cvae:
        cvae.sample(n=1)
        assert cvae.models() == [{"model": "digits", "version": "2"}]
    assert [path for path, _ in queries] == ["/v1/model", "/v1/samples", "/v1/models"]
    assert all(params == {"model": "digits", "version": "2"} for _, params in queries)
    with Client("http://model.test", transport=httpx.MockTransport(answer)) as cvae:
        cvae.model()
    assert queries[-1][1] == {}  # unpinned: the service's default
