"""Bounded work: 503 with Retry-After at once past the bound, 504 past the timeout, both counted."""

import asyncio
import time

import httpx
from fastapi.testclient import TestClient
from servers import wait_ready

from service.app import create_app
from service.settings import Settings

HEAVY = {"images": [[0.0] * 784] * 4, "num_samples": 2000, "adaptive": False}


def test_past_the_bound_the_answer_is_503_at_once(shipped_model):
    settings = Settings(model_dir=shipped_model, max_in_flight=1, max_work=10**7)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)

        async def fire():
            transport = httpx.ASGITransport(app=client.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as http:
                slow = asyncio.ensure_future(http.post("/v1/log-likelihood", json=HEAVY))
                await asyncio.sleep(0.05)
                started = time.perf_counter()
                refused = await http.post("/v1/classify", json={"images": [[0.0] * 784], "num_samples": 10})
                return refused, time.perf_counter() - started, await slow

        refused, seconds, slow = client.portal.call(fire)
        assert slow.status_code == 200
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "capacity" in refused.json()["error"] and seconds < 0.5
        assert 'cvae_rejected_total{reason="overloaded"} 1.0' in client.get("/metrics").text
        assert client.post("/v1/classify", json={"images": [[0.0] * 784], "num_samples": 10}).status_code == 200


def test_a_full_batch_queue_is_503_too(shipped_model):
    # calls of 4 images x 10 classes x 100 samples = 4000 passes, under a quarter of 20000: all batched
    settings = Settings(model_dir=shipped_model, max_queue=1, max_in_flight=100, max_work=10**7, score_chunk_rows=20000)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)

        async def fire():
            transport = httpx.ASGITransport(app=client.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as http:
                body = {**HEAVY, "num_samples": 100}
                return await asyncio.gather(*(http.post("/v1/log-likelihood", json=body) for _ in range(8)))

        statuses = sorted(r.status_code for r in client.portal.call(fire))
        assert 200 in statuses and 503 in statuses and set(statuses) <= {200, 503}


def test_what_the_limits_admit_finishes_within_the_timeout(shipped_model):
    settings = Settings(model_dir=shipped_model, request_timeout_s=1.0, max_work=10**8)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        limit = client.get("/v1/model").json()["limits"]["max_work"]
        assert 0 < limit < 10**8  # what this machine computes in half a second, not the setting
        most = {"images": [[0.0] * 784], "num_samples": limit // 10, "adaptive": False}
        assert client.post("/v1/log-likelihood", json=most).status_code == 200
        over = client.post("/v1/log-likelihood", json={**most, "num_samples": limit // 10 + 1})
        assert over.status_code == 422 and "CVAE_REQUEST_TIMEOUT_S" in over.json()["error"]


def test_past_the_timeout_the_answer_is_504_naming_the_setting(shipped_model):
    settings = Settings(model_dir=shipped_model, request_timeout_s=0.3, max_work=10**8)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        most = {"images": [[0.0] * 784], "adaptive": False}
        most["num_samples"] = client.get("/v1/model").json()["limits"]["max_work"] // 10

        async def fire():  # each alone within the timeout, sixteen at once not
            transport = httpx.ASGITransport(app=client.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as http:
                return await asyncio.gather(*(http.post("/v1/log-likelihood", json=most) for _ in range(16)))

        late = [r for r in client.portal.call(fire) if r.status_code == 504]
        assert late and "CVAE_REQUEST_TIMEOUT_S" in late[0].json()["error"]
        assert "in flight" in late[0].json()["error"]
        assert f'cvae_rejected_total{{reason="timeout"}} {len(late)}.0' in client.get("/metrics").text
        assert client.post("/v1/samples", json={"n": 1}).status_code == 200
