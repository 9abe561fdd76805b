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


def test_past_the_timeout_the_answer_is_504(shipped_model):
    settings = Settings(model_dir=shipped_model, request_timeout_s=0.05, max_work=10**8)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        response = client.post("/v1/log-likelihood", json={**HEAVY, "num_samples": 20000})
        assert response.status_code == 504 and "CVAE_REQUEST_TIMEOUT_S" in response.json()["error"]
        assert 'cvae_rejected_total{reason="timeout"} 1.0' in client.get("/metrics").text
        assert client.post("/v1/samples", json={"n": 1}).status_code == 200
