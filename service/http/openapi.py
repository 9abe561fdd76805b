"""What the OpenAPI document says beyond each route's own declarations: how API keys are sent, and the
answers of the middleware and of admission (401, 403, 429, and 503's Retry-After) where they can happen."""

from __future__ import annotations

from fastapi import FastAPI

from service.http.middleware import is_open
from service.schemas import ErrorResponse

RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}

# on every /v1 route
V1_ERRORS = {
    404: {
        "model": ErrorResponse,
        "description": "No such model or version, or the version failed its checks or was unloaded (GET /v1/models).",
    },
    413: {"model": ErrorResponse, "description": "The body is larger than the limit."},
    422: {"model": ErrorResponse, "description": "A field is invalid; the body names it and the fix."},
    503: {
        "model": ErrorResponse,
        "description": "The model is still loading, or the service is at capacity; retry after Retry-After.",
        "headers": RETRY_AFTER,
    },
    504: {"model": ErrorResponse, "description": "The request took longer than the timeout setting."},
}

# on every route that runs the model under admission (service.operations.admission)
LIMITED = {
    429: {
        "model": ErrorResponse,
        "description": "This caller (its API key, or its address when the service has no keys) already has its "
        "share of requests in progress (CVAE_CALLER_SHARE), or sent more than its rate (CVAE_CALLER_RATE); "
        "retry after Retry-After.",
        "headers": RETRY_AFTER,
    }
}

SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key of CVAE_API_KEYS: Authorization: Bearer KEY.",
    },
    "api_key": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "An API key of CVAE_API_KEYS."},
}
KEY_ANSWERS = {
    "401": "No API key was sent to a service that has keys (CVAE_API_KEYS): send 'Authorization: Bearer KEY' or "
    "'X-API-Key: KEY'.",
    "403": "The API key sent is not one of the service's keys.",
}


def document(app: FastAPI, keys_required: bool) -> dict:
    """The app's OpenAPI document with its API-key schemes: every route but the open ones (the probes)
    takes a key as Authorization: Bearer KEY or as X-API-Key: KEY, required when the service has keys
    (answering 401 without one, 403 for an unknown one), and optional when it has none."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        schema.setdefault("components", {})["securitySchemes"] = SCHEMES
        schema["security"] = [{"bearer": []}, {"api_key": []}, *([] if keys_required else [{}])]
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
        for path, operations in schema["paths"].items():
            for operation in operations.values():
                if is_open(path):
                    operation["security"] = []
                    continue
                responses = operation["responses"]
                for status, description in KEY_ANSWERS.items():
                    said = responses.get(status, {}).get("description")
                    responses[status] = {"description": f"{said} Or: {description}" if said else description}
                    responses[status]["content"] = error
        app.openapi_schema = schema
    return app.openapi_schema
