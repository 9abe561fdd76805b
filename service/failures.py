"""Every failure the service names, in one place: what a request or a model version can go wrong with.

Each is raised where the fault is found and answered at the edge: service/http/errors.py maps them to HTTP
statuses and bodies, service/oip/grpc_server.py to gRPC codes. Nothing here imports the rest of the service.
"""

from __future__ import annotations


class InputError(ValueError):
    """A client value that cannot be used; `field` names where it is, the message says the fix."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


class NotServed(LookupError):
    """A request names a model or version that cannot answer: unknown, failed or unloaded, or (`loading`)
    not ready yet, so worth a retry."""

    def __init__(self, field: str, message: str, loading: bool = False):
        super().__init__(message)
        self.field, self.message, self.loading = field, message, loading


class Overloaded(RuntimeError):
    """A queue of model calls is full: the caller should retry later (503)."""


class RequestTimeout(RuntimeError):
    """A request took longer than the timeout setting (504)."""


class CallerLimited(RuntimeError):
    """A caller went past its share or its rate: answered 429, retry after `retry_after` seconds."""

    def __init__(self, message: str, reason: str, retry_after: int):
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after


class BodyTooLarge(Exception):
    """A request body longer than CVAE_MAX_BODY_BYTES (413)."""


class ModelLoadError(RuntimeError):
    """The model directory cannot be served: missing, corrupt or mismatched files."""


class V2Error(Exception):
    """An Open Inference Protocol request that cannot be answered, with the HTTP status that says why."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


class TensorError(ValueError):
    """Tensors that are malformed or do not fit the graph; the message says which and how."""
