import pytest
from browser import chromium
from fastapi.testclient import TestClient
from servers import running_server, wait_ready
from synthetic import model_digits

from service.app import create_app
from service.engine.runtime import load_model
from service.settings import Settings


@pytest.fixture(scope="module")
def client(shipped_model):
    # a long timeout, so that the work limit is CVAE_MAX_WORK's however busy the machine (the limit is the
    # lower of it and what the measured rate computes in half the timeout)
    settings = Settings(
        model_dir=shipped_model, max_body_bytes=200_000, max_images=16, max_work=400_000, request_timeout_s=600
    )
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        yield c


@pytest.fixture(scope="module")
def manifest(client):
    return client.get("/v1/model").json()


@pytest.fixture(scope="module")
def model(shipped_model):
    return load_model(Settings(model_dir=shipped_model))


@pytest.fixture(scope="module")
def images(model):
    """Eight binary images drawn from the model itself, classes 0 to 7."""
    return model_digits(model, 8)[0]


@pytest.fixture(scope="module")
def server(shipped_model):
    """`cvae-serve` on the shipped model in a subprocess; its base URL."""
    with running_server(shipped_model, log_format="text") as (base, _):
        yield base


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (skipped where it or Playwright is missing)."""
    with chromium() as browser:
        yield browser
