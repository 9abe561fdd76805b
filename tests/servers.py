"""Helpers for tests that start the real server in a subprocess, and for tests that force the order of
events: model calls held at a gate until the test lets them go, and waits for a state rather than for a
time."""

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx


def wait_ready(client, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("service never became ready")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command() -> list[str]:
    script = Path(sys.executable).parent / "cvae-serve"
    return [str(script)] if script.exists() else [sys.executable, "-m", "service.cli"]


HELD_SERVE = """
import sys, time
from pathlib import Path
from service.engine import runtime
from service.cli import main

hold = Path(sys.argv[1])
log_weights = runtime.Model.log_weights

def held(self, *args):
    if hold.exists():
        hold.with_name(hold.name + ".held").touch()
        while hold.exists():
            time.sleep(0.005)
    return log_weights(self, *args)

runtime.Model.log_weights = held
sys.exit(main([]))
"""


def held_serve_command(hold: Path) -> list[str]:
    """`cvae-serve` whose scorer calls wait while the file `hold` exists (delete it to let them go); the
    first that waits creates the file `hold`.held. For running_server's `serve`."""
    return [sys.executable, "-c", HELD_SERVE, str(hold)]


@contextlib.contextmanager
def running_server(model_dir, serve: list[str] | None = None, **settings):
    """`cvae-serve` (or the command `serve`) in a subprocess on a free port, ready; yields (base URL,
    process). With model_dir None it serves a repository (pass model_repository=...)."""
    port = free_port()
    env = {**os.environ, "CVAE_PORT": str(port)}
    env.pop("CVAE_MODEL_DIR", None)
    if model_dir is not None:
        env["CVAE_MODEL_DIR"] = str(model_dir)
    env.update({f"CVAE_{key.upper()}": str(value) for key, value in settings.items()})
    log = tempfile.TemporaryFile()  # not a pipe: a full pipe would block the server's logging
    process = subprocess.Popen(serve or serve_command(), env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                log.seek(0)
                raise AssertionError("server never became ready: " + log.read().decode())
            time.sleep(0.2)
        yield base, process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
        log.close()


def post_scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict:
    """The ASGI scope of a JSON POST to `path` from a client on loopback, with `headers` besides."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }


def send_partial_body(app, path: str, body: bytes, headers: list[tuple[bytes, bytes]], call=None) -> list[dict]:
    """Call the ASGI `app` as a client that sends the first bytes of a POST body to `path`, then leaves;
    the messages the app sent back. `call(app, scope, receive, send)` runs it (default asyncio.run)."""
    import asyncio

    messages = iter([{"type": "http.request", "body": body, "more_body": True}, {"type": "http.disconnect"}])
    sent = []

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)

    scope = post_scope(path, [(b"host", b"testserver"), *headers])
    if call is None:
        asyncio.run(app(scope, receive, send))
    else:
        call(app, scope, receive, send)
    return sent


def wait_for(predicate, timeout=30.0):
    """Poll `predicate` until it is true, failing the test after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition never came true")


def states(client, headers=None) -> dict:
    """(model, version) -> its row of GET /v1/models."""
    rows = client.get("/v1/models", headers=headers).json()["models"]
    return {(m["model"], m["version"]): m for m in rows}


async def until(condition, timeout: float = 60.0) -> None:
    """Let the event loop run until `condition()` holds, failing the test after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "the state awaited never came"
        await asyncio.sleep(0.001)


@contextlib.contextmanager
def held_calls(app, graph: str = "scorer"):
    """Hold every call of `graph` by the app's default model version until the test sets the Event yielded
    (at the latest as the block ends); yields (that Event, the callers of the calls held so far, in the
    order they came: service.operations.admission.CALLER, which a batcher's thread does not carry)."""
    from service.operations.admission import CALLER

    sessions = app.state.repository.resolve().inference.model.sessions
    session, release, callers = sessions[graph], threading.Event(), []

    class Held:
        def run(self, names, feeds):
            callers.append(CALLER.get())
            if not release.wait(60):
                raise TimeoutError(f"the test never let the {graph} calls go")
            return session.run(names, feeds)

        def __getattr__(self, name):
            return getattr(session, name)

    sessions[graph] = Held()
    try:
        yield release, callers
    finally:
        release.set()
        sessions[graph] = session
