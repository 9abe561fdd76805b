"""The runtime image, built for real (deploy/buildah/build.sh) and run with its own command and health check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest
from servers import free_port

from service.schemas import DIGIT_PNG

ROOT = Path(__file__).resolve().parents[2]
NEEDED = ("buildah", "mmdebstrap")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(tool) for tool in NEEDED),
    reason="building images needs root with buildah and mmdebstrap (.ci/run installs them from Debian as root)",
)


def buildah(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["buildah", "--storage-driver", "vfs", *args], capture_output=True, text=True, check=check, timeout=600
    )


@pytest.fixture(scope="module")
def image():
    tag = f"localhost/mnist-cvae:test-{uuid.uuid4().hex[:8]}"
    built = subprocess.run(
        [str(ROOT / "deploy/buildah/build.sh"), tag], capture_output=True, text=True, timeout=900, cwd=ROOT
    )
    assert built.returncode == 0, built.stderr[-3000:]
    print(built.stdout.strip().splitlines()[-1])  # the image and its size, as the README records
    try:
        yield tag
    finally:
        buildah("rmi", "-f", tag, check=False)  # the base stays cached for the next build


@pytest.fixture(scope="module")
def container(image):
    name = buildah("from", "--pull-never", image).stdout.strip()
    try:
        yield name
    finally:
        buildah("rm", name, check=False)


def config(container: str) -> dict:
    return json.loads(buildah("inspect", container).stdout)


def test_the_image_serves_as_its_non_root_user_and_passes_its_health_check(container):
    settings = config(container)
    command = settings["OCIv1"]["config"]["Cmd"]
    health = settings["Docker"]["config"]["Healthcheck"]["Test"]
    assert health[0] == "CMD" and "/readyz" in " ".join(health)
    port = free_port()
    service = subprocess.Popen(
        ["buildah", "--storage-driver", "vfs", "run", "--isolation", "chroot", "-e", f"CVAE_PORT={port}"]
        + [container, "--", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        probe = [part.replace(":8000/", f":{port}/") for part in health[1:]]  # the image's own check
        deadline = time.time() + 120
        while True:
            checked = buildah("run", "--isolation", "chroot", container, "--", *probe, check=False)
            if checked.returncode == 0:
                break
            assert service.poll() is None and time.time() < deadline, service.stdout.read()[-3000:]
            time.sleep(1)

        base = f"http://127.0.0.1:{port}"
        answer = httpx.post(f"{base}/v1/classify", json={"images": [DIGIT_PNG], "seed": 0}, timeout=30)
        assert answer.status_code == 200 and answer.json()["results"][0]["predicted"] == 3
        models = httpx.get(f"{base}/v1/models", timeout=10).json()["models"]
        assert all(m["state"] == "ready" for m in models) and any(m["default"] for m in models)

        servers = [
            p for p in psutil.Process(service.pid).children(recursive=True) if "cvae-serve" in " ".join(p.cmdline())
        ]
        assert servers and all(p.uids().real == 10001 and p.uids().effective == 10001 for p in servers)
        assert settings["OCIv1"]["config"]["User"] == "cvae"
    finally:
        service.terminate()
        service.wait(timeout=60)


def test_the_image_holds_no_torch_compiler_or_test_tools(container):
    root = Path(buildah("mount", container).stdout.strip())
    try:
        site = next(root.glob("opt/venv/lib/python3*/site-packages"))
        tools = ("torch", "pytest", "_pytest", "ruff", "schemathesis", "ray")
        assert not [name for name in tools if (site / name).exists()]
        assert (site / "onnxruntime").is_dir() and (site / "service").is_dir()
        compilers = [tool for tool in ("gcc", "cc", "g++", "clang", "make") if (root / "usr/bin" / tool).exists()]
        assert not compilers
        assert not (root / "opt/cvae/tests").exists() and not (root / "src").exists()
        assert not list((root / "opt/cvae/models").glob("*/*/checkpoint.pt"))  # the service needs no checkpoint
        assert list((root / "opt/cvae/models").glob("*/*/manifest.json"))
    finally:
        buildah("umount", container, check=False)
