import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_MODEL = ROOT / "models" / "mnist-cvae" / "1.0.0"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    path = os.environ.get("MNIST_DIR")
    if not path:
        pytest.skip("MNIST_DIR is not set: point it at a folder with the four MNIST IDX files")
    return Path(path)


@pytest.fixture(scope="session")
def shipped_model() -> Path:
    return SHIPPED_MODEL
