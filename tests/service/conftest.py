import pytest
from fastapi.testclient import TestClient
from servers import wait_ready

from service.app import create_app
from service.settings import Settings


@pytest.fixture(scope="module")
def client(shipped_model):
    settings = Settings(model_dir=shipped_model, max_body_bytes=200_000, max_images=16, max_work=400_000)
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        yield c


@pytest.fixture(scope="module")
def manifest(client):
    return client.get("/v1/model").json()
