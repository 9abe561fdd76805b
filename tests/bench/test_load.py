"""The benchmark's load generator counts what the server really answered."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.load import run_load


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Handler.seen.append(body)
        if self.path == "/busy":
            return self._answer(503, b'{"error": "busy"}')
        if self.path == "/close":
            return self._answer(200, b"{}", close=True)
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b'{"a":', b" 1}"):
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return None
        return self._answer(200, json.dumps({"echo": body}).encode())

    def _answer(self, status: int, payload: bytes, close: bool = False):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture(scope="module")
def base():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("path", ["/ok", "/chunked", "/close"])
def test_answers_count_as_requests_and_images(base, path):
    result = run_load(base, "POST", path, lambda i: {"i": i}, 3, concurrency=4, duration=0.5)
    assert result.errors == 0
    assert result.requests > 4
    assert result.images == 3 * result.requests
    assert len(result.latencies) == result.requests
    assert 0 < result.percentile(50) <= result.percentile(99)


def test_every_worker_sends_its_own_bodies(base):
    Handler.seen.clear()
    run_load(base, "POST", "/ok", lambda i: {"i": i}, 1, concurrency=3, duration=0.3)
    sent = sorted(body["i"] for body in Handler.seen)
    assert sent[:3] == [0, 1, 2]
    assert len(set(sent)) == len(sent)  # worker w sends w, w + 3, w + 6, ...


def test_refusals_and_closed_ports_are_errors(base):
    busy = run_load(base, "POST", "/busy", lambda i: {"i": i}, 1, concurrency=2, duration=0.3)
    assert busy.requests == 0 and busy.errors > 0
    closed = run_load("http://127.0.0.1:9", "POST", "/ok", lambda i: {}, 1, concurrency=1, duration=0.2)
    assert closed.requests == 0 and closed.errors > 0
