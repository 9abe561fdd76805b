"""The runtime image's install, outside a container: a fresh venv with the base package only."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
from servers import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_base_install_serves_the_shipped_model_without_torch(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = venv / "bin" / "pip"
    # what the Dockerfile copies, then its command: pip install --no-cache-dir . (no extras)
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("service", "training", "client", "cvae"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [str(pip), "install", "--no-cache-dir", "-q", str(source)],
        check=True,
        timeout=900,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    installed = subprocess.run([str(pip), "list", "--format=freeze"], capture_output=True, text=True).stdout.lower()
    for absent in ("torch", "pytest", "onnx==", "ruff"):
        assert absent not in installed, f"{absent} is in the runtime install"
    port = free_port()
    env = {**os.environ, "CVAE_PORT": str(port), "CVAE_MODEL_REPOSITORY": str(ROOT / "models")}  # as the image does
    env.pop("CVAE_MODEL_DIR", None)
    env.pop("PYTHONPATH", None)
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(venv / "bin" / "cvae-serve")], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path
        )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log.read_text()
            time.sleep(0.3)
        else:
            raise AssertionError("never ready: " + log.read_text())
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/classify", json={"images": [[0.0] * 784], "num_samples": 20})
        assert answer.status_code == 200
        # the README's client example works after the same install, with nothing more
        example = (
            f"from client import Client\nwith Client('http://127.0.0.1:{port}') as cvae:\n"
            "    s = cvae.sample(n=2, y=7, seed=1)\n    print(s.mean.shape, cvae.classify(s.mean).probs.shape)\n"
        )
        python = str(venv / "bin" / "python")
        run = subprocess.run([python, "-c", example], capture_output=True, text=True, cwd=tmp_path)
        assert run.returncode == 0 and "(2, 28, 28) (2, 10)" in run.stdout, run.stderr
    finally:
        process.terminate()
        process.wait(timeout=30)
