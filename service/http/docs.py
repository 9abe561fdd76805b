"""/docs (Swagger UI), /redoc, /openapi.json and /favicon.ico, served from installed files only.

FastAPI's own /docs and /redoc load their scripts from a CDN, so they are blank on a network
without internet. The scripts here come from the `fastapi-offline` package, which bundles
Swagger UI and ReDoc; nothing on these pages reaches beyond the service.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response

from service.operations.versions import served_version

router = APIRouter(include_in_schema=False)

# Only this service may be reached from the docs pages (ReDoc would fetch its logo from a CDN).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
)

ASSETS = "/docs-assets"
OPENAPI = "/openapi.json"
MEDIA_TYPES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}


@cache
def _asset(name: str) -> bytes:
    return files("fastapi_offline").joinpath("static", name).read_bytes()


@router.get(ASSETS + "/{name}")
async def asset(name: str) -> Response:
    if name not in MEDIA_TYPES:
        raise HTTPException(404, f"No asset {name!r}; the docs use {sorted(MEDIA_TYPES)}.")
    return Response(_asset(name), media_type=MEDIA_TYPES[name], headers={"Cache-Control": "public, max-age=86400"})


@router.get(OPENAPI)
async def openapi(request: Request) -> JSONResponse:
    """The OpenAPI schema (a route of its own, so that metrics and logs name it like every other), with the
    version of the model that answers requests naming none."""
    schema = request.app.openapi()
    served = served_version(request.app)
    if served is not None:
        schema = {**schema, "info": {**schema["info"], "version": served}}
    return JSONResponse(schema)


@router.get("/favicon.ico")
async def favicon() -> Response:
    return Response(_asset("favicon.png"), media_type="image/png", headers={"Cache-Control": "public, max-age=86400"})


def _self_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    page = get_swagger_ui_html(
        openapi_url=OPENAPI,
        title=request.app.title + " - docs",
        swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS}/swagger-ui.css",
        swagger_favicon_url="/favicon.ico",
        swagger_ui_parameters={"defaultModelsExpandDepth": 0, "tryItOutEnabled": True},
    )
    return _self_only(page)


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    page = get_redoc_html(
        openapi_url=OPENAPI,
        title=request.app.title + " - ReDoc",
        redoc_js_url=f"{ASSETS}/redoc.standalone.js",
        redoc_favicon_url="/favicon.ico",
        with_google_fonts=False,
    )
    return _self_only(page)
