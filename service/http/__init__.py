"""The HTTP edge of /v1 and the pages: one router per resource (v1, health, docs, page), their dependencies
(the leased version, the refusal of unknown query parameters), the middleware (request context, metrics,
API keys, body limit, cancellation of abandoned requests), the OpenAPI document and the errors' answers."""
