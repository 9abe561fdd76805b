"""The web page: draw a digit, see p(y|x) and log p(x); sample a class; walk the latent space."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    return HTMLResponse(_html())


@cache
def _html() -> str:
    """The page, read from the package on first request only."""
    return files("service").joinpath("static/index.html").read_text()
