"""ASGI middleware: each request's id, log line and metrics (RequestContext), API keys (ApiKeyAuth), the
request-body limit (BodyLimit), and the cancellation of a request whose client has gone (CancelAbandoned).

CancelAbandoned: once a request's body is in, the connection is watched, and a disconnect before the
answer is complete cancels the request's handler. Its model calls stop at the next chunk
(adaptive.estimate_classes and chunks.run await each one; the batchers drop cancelled calls before they
run), and the request ends as ClientDisconnect: logged with status CLIENT_CLOSED, no 5xx."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from starlette.requests import ClientDisconnect

from service.failures import BodyTooLarge
from service.operations.admission import CALLER, address_of, given_key, request_id_of, which_key
from service.telemetry import CLIENT_CLOSED, REQUEST_ID, Metrics

log = logging.getLogger("cvae.errors")


def too_large_body(max_bytes: int) -> dict:
    return {
        "error": f"The request body exceeds {max_bytes} bytes (setting CVAE_MAX_BODY_BYTES); "
        "send fewer images per request.",
        "problems": [{"field": "body", "message": f"larger than {max_bytes} bytes"}],
    }


class BodyLimit:
    """Answer 413 when a body exceeds `max_bytes`, by Content-Length or as it streams in."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reject(send)
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send):
        await _send_json(send, 413, too_large_body(self.max_bytes))


# the page, the docs and the schema hold no data; the probes must answer load balancers
OPEN_PATHS = (
    *("/", "/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"),
    *("/docs", "/redoc", "/openapi.json", "/favicon.ico"),
)
OPEN_PREFIXES = ("/docs-assets/",)


async def _send_json(send, status: int, payload: dict, headers: list | None = None) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def is_open(path: str) -> bool:
    """Whether a path is answered without an API key: the probes, the page and the docs."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


class ApiKeyAuth:
    """Require one of `keys` (Authorization: Bearer KEY, or X-API-Key: KEY) on every path but the probes.

    Every key is compared in constant time; keys are never logged."""

    def __init__(self, app, keys: list[str]):
        self.app = app
        self.keys = [key.encode() for key in keys]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if not self.keys or is_open(scope["path"]):
            return await self._as(address_of(scope.get("client")), scope, receive, send)
        given = given_key(dict(scope.get("headers", [])))
        if not given:
            return await _send_json(
                send,
                401,
                {
                    "error": "An API key is required: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'.",
                    "problems": [{"field": "Authorization", "message": "missing"}],
                },
                [(b"www-authenticate", b"Bearer")],
            )
        index = which_key(self.keys, given)
        if index is None:
            return await _send_json(
                send,
                403,
                {
                    "error": "The API key is not valid; check it with whoever runs this service.",
                    "problems": [{"field": "Authorization", "message": "unknown key"}],
                },
            )
        return await self._as(f"key-{index + 1}", scope, receive, send)

    async def _as(self, caller: str, scope, receive, send):
        """Run the request as `caller`, the one whose share and rate admission counts."""
        token = CALLER.set(caller)
        try:
            return await self.app(scope, receive, send)
        finally:
            CALLER.reset(token)


ERROR_BODY_BYTES = 8192  # the most of an error answer kept to find its message for the log


def _error_message(body: bytes) -> str | None:
    """The `error` of a JSON error answer, shortened for a log line."""
    try:
        message = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None
    return str(message)[:300] if message else None


CLOSED = "The client closed the request before it was answered."


def internal_error(request_id: str) -> dict:
    return {"error": f"Internal error; the logs hold its traceback under request id {request_id}.", "problems": []}


class RequestContext:
    """Give every request an id (X-Request-ID, or a new one), echo it, count and time it in `metrics` under
    its route's path template, and log one JSON line per request: id, method, path, status and latency,
    and for a 4xx or 5xx the answer's error message; never the request's body, query or headers. A client
    that left before its answer is logged with status CLIENT_CLOSED and sent nothing. An unexpected error
    is logged here with its traceback and answered 500, both with the id; any other line logged while the
    request runs takes it from telemetry.REQUEST_ID."""

    def __init__(self, app, logger: logging.Logger, metrics: Metrics):
        self.app = app
        self.log = logger
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = request_id_of(dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1"))
        scope.setdefault("state", {})["request_id"] = request_id
        token = REQUEST_ID.set(request_id)
        where = {"request_id": request_id, "method": scope["method"], "path": scope["path"]}
        start = time.perf_counter()
        status = None
        error_body = bytearray()

        async def with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            elif status >= 400 and len(error_body) < ERROR_BODY_BYTES:
                error_body.extend(message.get("body", b"")[: ERROR_BODY_BYTES - len(error_body)])
            await send(message)

        try:
            await self.app(scope, receive, with_id)
        except ClientDisconnect:
            status = CLIENT_CLOSED
        except Exception:
            log.exception("unexpected error", extra=where)
            if status is not None:  # the answer had begun: the server can only drop the connection
                raise
            await _send_json(with_id, 500, internal_error(request_id))
        finally:
            status = 500 if status is None else status
            seconds = time.perf_counter() - start
            endpoint = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe(endpoint, scope["method"], status, seconds)
            error = CLOSED if status == CLIENT_CLOSED else _error_message(bytes(error_body))
            self.log.info(
                "request",
                extra={
                    **where,
                    "status": status,
                    "latency_ms": round(seconds * 1000, 3),
                    **({"error": error} if status >= 400 else {}),
                },
            )
            REQUEST_ID.reset(token)


def _without_body(scope) -> bool:
    """True when the request carries no body, so that its one http.request message may be read at once."""
    headers = dict(scope.get("headers", []))
    return b"transfer-encoding" not in headers and headers.get(b"content-length", b"0") in (b"0", b"")


class CancelAbandoned:
    """ASGI middleware: run the app as a task of its own and cancel it when the client disconnects.

    The connection is read by this middleware only after the app has received the last body chunk
    (bodiless requests: at once), so the body still streams through the app under its own limits."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        inbox: asyncio.Queue = asyncio.Queue()  # what the watcher read, for the app to receive
        watcher: asyncio.Task | None = None
        answered = False
        abandoned = False

        async def watch():
            nonlocal abandoned
            while True:
                message = await receive()
                inbox.put_nowait(message)
                if message["type"] == "http.disconnect":
                    if not answered:
                        abandoned = True
                        handler.cancel()
                    return

        def start_watching():
            nonlocal watcher
            if watcher is None:
                watcher = asyncio.create_task(watch())

        async def app_receive():
            if watcher is not None:
                return await inbox.get()
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                start_watching()
            elif message["type"] == "http.disconnect":
                start_watching()  # so that a later receive() answers the disconnect again
                inbox.put_nowait(message)
            return message

        async def app_send(message):
            nonlocal answered
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True
            await send(message)

        handler = asyncio.create_task(self.app(scope, app_receive, app_send))
        if _without_body(scope):
            start_watching()
        try:
            return await asyncio.shield(handler)
        except asyncio.CancelledError:
            if not abandoned:  # the server itself is stopping this request: stop the handler, let it unwind
                handler.cancel()
                await asyncio.wait({handler})
                raise
            raise ClientDisconnect from None
        finally:
            if watcher is not None:
                watcher.cancel()
