"""A client that disconnects stops its work: the scorer passes computed after it left stop within a chunk,
and the request is counted as closed by the client (499), not as an error."""

import json
import re
import socket
import time

import httpx
import pytest
from servers import running_server, wait_for

ONE_IMAGE = {"images": [[0.0] * 784], "num_samples": 20000, "adaptive": False}
ALL_PASSES = 10 * 20000  # one image x 10 classes x K


def scorer_passes(base: str) -> float:
    text = httpx.get(f"{base}/metrics").text
    found = re.search(r'^cvae_model_passes_total\{graph="scorer"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def send_and_leave(base: str, body: dict, after_s: float) -> None:
    """POST `body` to /v1/classify over a raw connection, then close it after `after_s` seconds."""
    host, port = base.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(
            b"POST /v1/classify HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        time.sleep(after_s)


def settled(base: str) -> float:
    """The scorer passes once they stop growing."""
    last = -1.0
    while (now := scorer_passes(base)) != last:
        last = now
        time.sleep(0.5)
    return now


@pytest.mark.parametrize("cancel", [True, False])
def test_a_client_that_leaves_stops_its_scorer_passes(shipped_model, cancel):
    with running_server(shipped_model, cancel_abandoned=cancel) as (base, _):
        before = settled(base)
        send_and_leave(base, ONE_IMAGE, after_s=0.3)
        computed = settled(base) - before
        if not cancel:  # every pass is computed for nobody
            assert computed >= ALL_PASSES
            return
        assert 0 < computed < ALL_PASSES / 2
        closed = 'cvae_requests_total{endpoint="/v1/classify",method="POST",status="499"} 1.0'
        wait_for(lambda: closed in httpx.get(f"{base}/metrics").text, timeout=10)
        assert not re.search(r'cvae_requests_total\{[^}]*status="5', httpx.get(f"{base}/metrics").text)
        # the service still answers
        assert httpx.post(f"{base}/v1/classify", json={"images": [[0.0] * 784]}, timeout=30).status_code == 200


def test_an_answered_request_is_not_cancelled(shipped_model):
    with running_server(shipped_model) as (base, _):
        answer = httpx.post(f"{base}/v1/classify", json={**ONE_IMAGE, "num_samples": 200}, timeout=30)
        assert answer.status_code == 200
        page = httpx.get(f"{base}/v1/model", timeout=30)  # a bodiless request, watched from the start
        assert page.status_code == 200
