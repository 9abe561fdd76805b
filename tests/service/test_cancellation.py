"""A client that disconnects stops its work: the scorer call under way when it leaves is the last one,
and the request is counted as closed by the client (499), not as an error. The scorer is held at a gate
until the client has left, so that what is computed after it left does not depend on the machine's
speed."""

import asyncio
import json
import re

import httpx
from fastapi.testclient import TestClient
from servers import held_calls, post_scope, running_server, until, wait_ready

from service.app import create_app
from service.settings import Settings

ONE_IMAGE = {"images": [[0.0] * 784], "num_samples": 4096, "adaptive": False}
ALL_PASSES = 10 * 4096  # one image x 10 classes x K, in scorer calls of 2048 passes (CVAE_SCORE_CHUNK_ROWS)


def scorer_passes(client) -> float:
    found = re.search(r'^cvae_model_passes_total\{graph="scorer"\} (\S+)$', client.get("/metrics").text, re.M)
    return float(found.group(1)) if found else 0.0


def leave_during_first_scorer_call(client, body: dict) -> tuple[list[dict], int]:
    """POST `body` to /v1/classify as a client that leaves while the request's first scorer call computes,
    that call held until the service has read the disconnect; the messages the service sent back and the
    number of scorer calls made."""
    payload = json.dumps(body).encode()
    scope = post_scope("/v1/classify", [(b"content-length", str(len(payload)).encode())])

    async def leave(release, calls):
        left, read, sent = asyncio.Event(), asyncio.Event(), []
        messages = [{"type": "http.request", "body": payload, "more_body": False}]

        async def receive():
            if messages:
                return messages.pop(0)
            await left.wait()
            read.set()  # the service acts on the disconnect before it next awaits anything
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        request = asyncio.create_task(client.app(scope, receive, send))
        await until(lambda: calls or request.done())
        assert calls, sent
        left.set()
        await read.wait()  # the service has cancelled the request, its scorer call still held
        release.set()
        await request
        return sent

    with held_calls(client.app) as (release, calls):
        return client.portal.call(leave, release, calls), len(calls)


def test_a_client_that_leaves_stops_its_scorer_passes(shipped_model):
    # a long timeout, so that the request's work is within the limit however slow the machine
    settings = Settings(model_dir=shipped_model, request_timeout_s=600)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        before = scorer_passes(client)
        sent, calls = leave_during_first_scorer_call(client, ONE_IMAGE)
        computed = scorer_passes(client) - before
        assert sent == [] and calls == 1  # the call under way when the client left was the last
        assert 0 < computed < ALL_PASSES / 2
        metrics = client.get("/metrics").text
        assert 'cvae_requests_total{endpoint="/v1/classify",method="POST",status="499"} 1.0' in metrics
        assert not re.search(r'cvae_requests_total\{[^}]*status="5', metrics)
        # the service still answers
        assert client.post("/v1/classify", json={"images": [[0.0] * 784]}).status_code == 200


def test_an_answered_request_is_not_cancelled(shipped_model):
    with running_server(shipped_model) as (base, _):
        answer = httpx.post(f"{base}/v1/classify", json={**ONE_IMAGE, "num_samples": 200}, timeout=30)
        assert answer.status_code == 200
        page = httpx.get(f"{base}/v1/model", timeout=30)  # a bodiless request, watched from the start
        assert page.status_code == 200
