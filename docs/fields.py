"""Writes docs/answers.md: every field of every /v1 answer and request, from service/schemas/.

The OpenAPI descriptions at /docs and this page come from the same Field descriptions, so they
cannot disagree; tests/test_docs.py fails when the page is older than the schemas.

    python docs/fields.py
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from service import schemas

PAGE = Path(__file__).with_name("answers.md")

ANSWERS = {
    "POST /v1/classify": schemas.ClassifyResponse,
    "POST /v1/log-likelihood": schemas.ScoreResponse,
    "POST /v1/encode": schemas.EncodeResponse,
    "POST /v1/samples, POST /v1/interpolations": schemas.SampleResponse,
    "GET /v1/model": schemas.ModelInfo,
    "GET /v1/models": schemas.ModelList,
    "every error": schemas.ErrorResponse,
}
REQUESTS = {
    "POST /v1/classify": schemas.ClassifyRequest,
    "POST /v1/log-likelihood": schemas.ScoreRequest,
    "POST /v1/encode": schemas.EncodeRequest,
    "POST /v1/samples": schemas.SampleRequest,
    "POST /v1/interpolations": schemas.InterpolateRequest,
}


def _models_in(annotation) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (in lists, optionals and unions)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models_in(arg)]


def rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str]]:
    """(field path, description) of a model's fields, nested models' fields after their parent."""
    found = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        text = " ".join((info.description or "").split())
        found.append((path, text))
        for inner in _models_in(info.annotation):
            found += rows(inner, f"{path}.")
    return found


def table(model: type[BaseModel]) -> list[str]:
    lines = ["| field | meaning |", "|---|---|"]
    for path, text in rows(model):
        escaped = text.replace("|", "\\|")  # a pipe inside a cell would end it
        lines.append(f"| `{path}` | {escaped} |")
    return lines


def render() -> str:
    lines = [
        "# Every field of the /v1 API",
        "",
        "Written by `python docs/fields.py` from `service/schemas/`, which also gives the descriptions",
        "at `/docs`. Fields marked (include '...') come only when the request's `include` names that group.",
        "",
        "## Answers",
    ]
    for endpoint, model in ANSWERS.items():
        lines += ["", f"### {endpoint}", "", *table(model)]
    lines += ["", "## Requests"]
    for endpoint, model in REQUESTS.items():
        lines += ["", f"### {endpoint}", "", *table(model)]
    return "\n".join(lines) + "\n"


def main() -> None:
    PAGE.write_text(render())
    print(f"wrote {PAGE}")


if __name__ == "__main__":
    main()
