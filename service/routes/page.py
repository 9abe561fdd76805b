"""The web page: draw a digit, see p(y|x) and log p(x); sample a class; walk the latent space."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    return HTMLResponse(files("service").joinpath("static/index.html").read_text())
