"""Bounded work: 503 with Retry-After at once past the bound, 504 past the timeout, both counted. The
scorer's calls are held until the requests under test are where the rule applies, so that no verdict
depends on how fast the machine computes."""

import asyncio

import httpx
from fastapi.testclient import TestClient
from servers import held_calls, until, wait_ready

from service.app import create_app
from service.settings import Settings

SMALL = {"images": [[0.0] * 784], "num_samples": 10, "adaptive": False}  # one scorer call of 100 passes


def http_client(client) -> httpx.AsyncClient:
    """An async client of the app, in the event loop that serves it (client.portal.call)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=client.app), base_url="http://t", timeout=120)


def test_past_the_bound_the_answer_is_503_at_once(shipped_model):
    settings = Settings(model_dir=shipped_model, max_in_flight=1)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        with held_calls(client.app) as (release, calls):

            async def fire():
                async with http_client(client) as http:
                    admitted = asyncio.ensure_future(http.post("/v1/log-likelihood", json=SMALL))
                    await until(lambda: calls)  # admitted, and held in the model
                    refused = await http.post("/v1/classify", json=SMALL)
                    assert not admitted.done()  # refused while the place is taken: it waited for nothing
                    release.set()
                    return refused, await admitted

            refused, admitted = client.portal.call(fire)
        assert admitted.status_code == 200
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "capacity" in refused.json()["error"]
        assert 'cvae_rejected_total{reason="overloaded"} 1.0' in client.get("/metrics").text
        assert client.post("/v1/classify", json=SMALL).status_code == 200


def test_a_full_batch_queue_is_503_too(shipped_model):
    # calls of 4 images x 10 classes x 100 samples = 4000 passes, under a quarter of 20000: all batched
    settings = Settings(model_dir=shipped_model, max_queue=1, max_in_flight=100, score_chunk_rows=20000)
    body = {"images": [[0.0] * 784] * 4, "num_samples": 100, "adaptive": False}
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        with held_calls(client.app) as (release, calls):

            async def fire():
                async with http_client(client) as http:
                    first = asyncio.ensure_future(http.post("/v1/log-likelihood", json=body))
                    await until(lambda: calls)  # its batch is in the batcher's worker, held
                    rest = [asyncio.ensure_future(http.post("/v1/log-likelihood", json=body)) for _ in range(7)]
                    await until(lambda: sum(r.done() for r in rest) == 6)  # one call waits in the queue; six refused
                    release.set()
                    return await asyncio.gather(first, *rest)

            statuses = sorted(r.status_code for r in client.portal.call(fire))
        assert statuses == [200] * 2 + [503] * 6


def test_the_work_limit_is_what_the_measured_rate_computes_in_half_the_timeout(shipped_model):
    settings = Settings(model_dir=shipped_model, request_timeout_s=1.0, max_work=10**8, max_num_samples=10**8)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        rate = client.app.state.repository.resolve().inference.model.passes_per_s  # measured as it loaded
        limit = client.get("/v1/model").json()["limits"]["max_work"]
        assert limit == int(rate * 0.5) and 0 < limit < 10**8  # not the setting
        # how long the request takes now, on a machine that others share, is a speed figure (bench/)
        client.app.state.admission.timeout = 600
        most = {"images": [[0.0] * 784], "num_samples": limit // 10, "adaptive": False}
        assert client.post("/v1/log-likelihood", json=most).status_code == 200
        over = client.post("/v1/log-likelihood", json={**most, "num_samples": limit // 10 + 1})
        assert over.status_code == 422 and "CVAE_REQUEST_TIMEOUT_S" in over.json()["error"]


def test_past_the_timeout_the_answer_is_504_naming_the_setting(shipped_model):
    timeout = 0.5
    settings = Settings(model_dir=shipped_model, request_timeout_s=timeout, max_running=1)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        admission = client.app.state.admission
        with held_calls(client.app) as (release, calls):

            async def fire():  # one held in the model, one waiting for its place: the timeout counts both
                async with http_client(client) as http:
                    running = asyncio.ensure_future(http.post("/v1/log-likelihood", json=SMALL))
                    await until(lambda: calls)
                    waiting = asyncio.ensure_future(http.post("/v1/log-likelihood", json=SMALL))
                    await until(lambda: admission.in_flight == 2)
                    await asyncio.sleep(timeout)  # both were admitted before it began: both deadlines have passed
                    release.set()
                    return await asyncio.gather(running, waiting)

            late = client.portal.call(fire)
        assert [r.status_code for r in late] == [504, 504] and len(calls) == 1  # the waiting one never ran
        assert "CVAE_REQUEST_TIMEOUT_S" in late[0].json()["error"] and "in flight" in late[0].json()["error"]
        assert 'cvae_rejected_total{reason="timeout"} 2.0' in client.get("/metrics").text
        assert client.post("/v1/samples", json={"n": 1}).status_code == 200
