"""The service runs without torch and without the training package."""

import subprocess
import sys

CHECK = """
import sys, time
from fastapi.testclient import TestClient
from service.app import create_app
from service.settings import Settings
with TestClient(create_app(Settings(model_dir=sys.argv[1]))) as client:
    while client.get("/readyz").status_code != 200:
        time.sleep(0.05)
    assert client.post("/v1/samples", json={"n": 2, "seed": 0}).status_code == 200
    assert client.post("/v1/classify", json={"images": [[0.0] * 784], "num_samples": 10}).status_code == 200
loaded = [m for m in sys.modules if m.split(".")[0] in ("torch", "training")]
print("loaded:", loaded)
sys.exit(1 if loaded else 0)
"""


def test_service_imports_neither_torch_nor_training(shipped_model):
    result = subprocess.run(
        [sys.executable, "-c", CHECK, str(shipped_model)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "loaded: []" in result.stdout
