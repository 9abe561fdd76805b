"""What every /v1 endpoint depends on: the model version a request names, leased for the request,
the refusal of query parameters the endpoint does not take, and admission for its model work (ModelWork)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response

from service.failures import InputError
from service.http.openapi import V1_ERRORS

ModelQuery = Annotated[
    str | None, Query(description="Model name (default: the default model); GET /v1/models lists them.")
]
VersionQuery = Annotated[
    str | None, Query(description="Model version (default: the newest ready version of the model).")
]


def get_repository(request: Request):
    """The app's model repository (service.operations.repository), 503 while the app is still starting."""
    repository = request.app.state.repository
    if repository is None:
        raise HTTPException(503, "The model repository is still loading; retry shortly.", headers={"Retry-After": "1"})
    return repository


RepositoryDep = Annotated[object, Depends(get_repository)]


def control_open(request: Request) -> None:
    """403 while loading and unloading versions by request is closed (Settings.control_closed)."""
    closed = request.app.state.settings.control_closed
    if closed:
        raise HTTPException(403, closed)


async def get_inference(
    repository: RepositoryDep,
    response: Response,
    request: Request,
    model: ModelQuery = None,
    version: VersionQuery = None,
):
    """The version a request names (or the default), leased until the request is done, so a swap never
    stops a model under a running request. The answer's X-Model-Name and X-Model-Version say which."""
    entry = repository.acquire(model, version)
    response.headers["X-Model-Name"], response.headers["X-Model-Version"] = entry.name, entry.version
    request.state.model_headers = {"X-Model-Name": entry.name, "X-Model-Version": entry.version}
    try:
        yield entry.inference
    finally:
        repository.release(entry)


# the leased version's service.engine.inference.Inference; the routes know it by what they call, so that the HTTP
# edge does not import the engine
InferenceDep = Annotated[object, Depends(get_inference)]


RENAMED = {"class": "y"}  # query parameters of earlier releases, and their names now


def _query_params(dependant) -> set[str]:
    """The query parameters an endpoint and its dependencies declare."""
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_params(sub)
    return names


_QUERY_NAMES: dict[str, frozenset[str]] = {}  # per route, filled on its first request


def _query_names(route) -> frozenset[str]:
    if route.unique_id not in _QUERY_NAMES:
        _QUERY_NAMES[route.unique_id] = frozenset(_query_params(route.dependant))
    return _QUERY_NAMES[route.unique_id]


async def known_query(request: Request) -> None:
    """Refuse query parameters the endpoint does not take, as unknown body fields are refused."""
    known = _query_names(request.scope["route"])
    for name in request.query_params:
        if name in RENAMED and RENAMED[name] in known:
            raise InputError(name, f"is now called {RENAMED[name]}: send ?{RENAMED[name]}=... instead.")
        if name not in known:
            takes = ", ".join(sorted(known)) or "none"
            raise InputError(name, f"is not a query parameter of this endpoint; it takes {takes} (see /docs).")


def v1_router() -> APIRouter:
    """A router of /v1 paths: they answer the errors of V1_ERRORS and refuse unknown query parameters."""
    return APIRouter(prefix="/v1", responses=V1_ERRORS, dependencies=[Depends(known_query)])


class ModelWork:
    """A request's model work: run under admission (its bounds, its caller's share, the timeout), then
    the images or samples it asked for counted in the endpoint's batch-size histogram."""

    def __init__(self, request: Request):
        self.admission = request.app.state.admission
        self.batch_size = request.app.state.metrics.batch_size.labels(request.scope["route"].path)

    async def __call__(self, work, count):
        """The answer of awaitable `work`; `count` is the number to count, or what gives it from the answer."""
        result = await self.admission.run(work)
        self.batch_size.observe(count(result) if callable(count) else count)
        return result


ModelWorkDep = Annotated[ModelWork, Depends(ModelWork)]
