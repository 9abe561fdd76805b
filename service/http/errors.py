"""Every client mistake as a JSON body that names the field and the fix (an unexpected error is
answered, and its traceback logged, by middleware.RequestContext)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from service.failures import BodyTooLarge, CallerLimited, InputError, NotServed, Overloaded, RequestTimeout
from service.http.middleware import too_large_body
from service.operations.admission import CALLER

RENAMED = {"return_x": 'send "include": ["x"] instead'}  # fields of earlier releases, and what to send now


def _field(location: tuple) -> str:
    parts = [str(p) for p in location if p not in ("body", "query", "path")]
    text = ""
    for part in parts:
        text += f"[{part}]" if part.isdigit() else (f".{part}" if text else part)
    return text or "body"


def error_body(message: str, problems: list[dict] | None = None) -> dict:
    return {"error": message, "problems": problems or []}


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        content_type = request.headers.get("content-type", "")
        for error in exc.errors():
            message = error.get("msg", "is invalid")
            location = tuple(error.get("loc", ()))
            kind = error.get("type")
            if kind == "json_invalid":
                message = "is not valid JSON; send a JSON object as described in /docs"
                location = ("body",)
            elif kind == "extra_forbidden" and location[-1] in RENAMED:
                message = f"is no longer a field: {RENAMED[location[-1]]}"
            elif kind == "finite_number":
                message = "is not a finite number (NaN, Infinity, or beyond 1.8e308, as 1e400 is); send a finite number"
            elif kind == "extra_forbidden":
                message = "is not a known field; see /docs for the fields of this endpoint"
            elif location == ("body",) and kind == "missing":
                message = "is empty; send a JSON object with this endpoint's fields (see /docs)"
            elif location == ("body",) and "json" not in content_type.lower():
                said = f"says {content_type!r}" if content_type else "has none"
                message = (
                    f"was not read as JSON: send it with the header Content-Type: application/json (this request "
                    f"{said}; curl needs -H 'content-type: application/json' with -d)"
                )
            problems.append({"field": _field(location), "message": message})
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:3])
        return JSONResponse(status_code=422, content=error_body(f"Invalid request: {summary}", problems))

    @app.exception_handler(InputError)
    async def bad_input(request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse(
            status_code=422,
            content=error_body(f"{exc.field} {exc.message}", [{"field": exc.field, "message": exc.message}]),
        )

    @app.exception_handler(NotServed)
    async def not_served(request: Request, exc: NotServed) -> JSONResponse:
        return JSONResponse(
            status_code=503 if exc.loading else 404,
            content=error_body(exc.message, [{"field": exc.field, "message": exc.message}]),
            headers={"Retry-After": "1"} if exc.loading else None,
        )

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        request.app.state.metrics.rejected.labels("overloaded").inc()
        return JSONResponse(
            status_code=503,
            content=error_body(f"The service is at capacity ({exc}); retry after the Retry-After delay."),
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(CallerLimited)
    async def caller_limited(request: Request, exc: CallerLimited) -> JSONResponse:
        request.app.state.metrics.observe_refused_caller(CALLER.get(), exc.reason)
        return JSONResponse(
            status_code=429,
            content=error_body(str(exc), [{"field": "Authorization", "message": f"past this caller's {exc.reason}"}]),
            headers={"Retry-After": str(exc.retry_after)},
        )

    @app.exception_handler(RequestTimeout)
    async def timed_out(request: Request, exc: RequestTimeout) -> JSONResponse:
        request.app.state.metrics.rejected.labels("timeout").inc()
        return JSONResponse(
            status_code=504,
            content=error_body(str(exc)),
        )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, ClientDisconnect):  # the client left while FastAPI read the body: no answer
            raise cause  # middleware.RequestContext logs it as such
        if isinstance(cause, BodyTooLarge):  # a streamed body crossed the limit while FastAPI read it
            return JSONResponse(status_code=413, content=too_large_body(request.app.state.settings.max_body_bytes))
        if exc.status_code == 400:  # FastAPI's "error parsing the body": bytes that are not JSON text
            message = "is not valid JSON text; send a UTF-8 JSON object as described in /docs"
            return JSONResponse(
                status_code=422,
                content=error_body(f"Invalid request: body {message}", [{"field": "body", "message": message}]),
            )
        if exc.status_code == 404 and exc.detail == "Not Found":  # no route: name the path
            message = "is not an endpoint of this service; /docs lists them"
            problems = [{"field": "path", "message": message}]
            return JSONResponse(status_code=404, content=error_body(f"{request.url.path} {message}", problems))
        if exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            message = f"{request.method} is not allowed on {request.url.path}; use {allowed or 'another method'}"
            problems = [{"field": "method", "message": message}]
            return JSONResponse(status_code=405, content=error_body(message, problems), headers=exc.headers)
        return JSONResponse(status_code=exc.status_code, content=error_body(str(exc.detail)), headers=exc.headers)
