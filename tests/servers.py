"""Helpers for tests that start the real server in a subprocess."""

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
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


@contextlib.contextmanager
def running_server(model_dir, **settings):
    """`cvae-serve` in a subprocess on a free port, ready; yields (base URL, process). With model_dir
    None it serves a repository (pass model_repository=...)."""
    port = free_port()
    env = {**os.environ, "CVAE_PORT": str(port)}
    env.pop("CVAE_MODEL_DIR", None)
    if model_dir is not None:
        env["CVAE_MODEL_DIR"] = str(model_dir)
    env.update({f"CVAE_{key.upper()}": str(value) for key, value in settings.items()})
    log = tempfile.TemporaryFile()  # not a pipe: a full pipe would block the server's logging
    process = subprocess.Popen(serve_command(), env=env, stdout=log, stderr=subprocess.STDOUT)
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
