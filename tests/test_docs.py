"""docs/answers.md is written from service/schemas/: the page and the OpenAPI descriptions agree."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_fields_page_is_current():
    spec = importlib.util.spec_from_file_location("fields", ROOT / "docs" / "fields.py")
    fields = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fields)
    page = (ROOT / "docs" / "answers.md").read_text()
    assert page == fields.render(), "docs/answers.md is older than service/schemas/: run python docs/fields.py"
    for endpoint in ("/v1/classify", "/v1/log-likelihood", "/v1/encode", "/v1/model"):
        assert f"### POST {endpoint}" in page or f"### GET {endpoint}" in page
    described = [line for line in page.splitlines() if line.startswith("| `results.")]
    assert described and all(not line.endswith("|  |") for line in described)  # every answer field has a meaning
