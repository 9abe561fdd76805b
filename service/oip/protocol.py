"""The Open Inference Protocol (KServe V2) apart from its transports: which version and graph a model
name means, a graph's metadata, and one run of a graph, checked against the manifest and the limits,
admitted and cut into chunks of CVAE_SCORE_CHUNK_ROWS rows. rest.py serves it over HTTP,
grpc_server.py over gRPC; both pass the app's state (`request.app.state`).

Errors are V2Error with the HTTP status that says what went wrong; gRPC maps it to its own codes.
"""

from __future__ import annotations

import contextlib
import logging
import math

import numpy as np

from service import telemetry
from service.engine.calls import in_thread
from service.engine.runtime import GRAPHS
from service.failures import NotServed, TensorError, V2Error
from service.oip import chunks, tensors
from service.oip.tensors import DATATYPE, InferRequest
from service.operations.versions import version_key

SERVER_NAME = "mnist-cvae"


def repository_of(state):
    repository = state.repository
    if repository is None:
        raise V2Error("The model is still loading; retry shortly.", 503)
    return repository


def split(state, name: str) -> tuple[str | None, str]:
    """(model, graph) of a protocol model name: a graph of the default model (`scorer`) or of a named
    model (`mnist-cvae-scorer`)."""
    if name in GRAPHS:
        return None, name
    model, _, graph = name.rpartition("-")
    repository = repository_of(state)
    if graph not in GRAPHS or model not in {n for n, _ in repository.serving}:
        names = [*GRAPHS, *(f"{m}-{g}" for m in sorted({n for n, _ in repository.serving}) for g in GRAPHS)]
        raise V2Error(f"Unknown model {name!r}; models are {names}.", 404)
    return model, graph


def graph_version(state, name: str, version: str | None = None):
    """The repository's version behind a protocol model name (the newest ready one unless named), and its graph."""
    model, graph = split(state, name)
    try:
        return repository_of(state).resolve(model, version), graph
    except NotServed as error:
        raise V2Error(error.message, 503 if error.loading else 404) from error


@contextlib.contextmanager
def held(state, name: str, version: str | None = None):
    """The version and graph behind a name, held until the answer is made, so a swap never stops it."""
    repository = repository_of(state)
    entry, graph = graph_version(state, name, version)
    repository.hold(entry)
    try:
        yield entry, graph
    finally:
        repository.release(entry)


def metadata(state, name: str, version: str | None = None) -> dict:
    """The graph's inputs and outputs, with datatypes and shapes (-1: any size), and the ready versions."""
    entry, graph = graph_version(state, name, version)
    declared = entry.inference.model.manifest["files"][graph]
    described = lambda args: [  # noqa: E731
        {"name": n, "datatype": DATATYPE, "shape": tensors.shape(s)} for n, s in args.items()
    ]
    ready = [v for (n, v), e in repository_of(state).serving.items() if n == entry.name and e.state == "ready"]
    return {
        "name": name,
        "versions": sorted(ready, key=version_key),
        "platform": "onnxruntime_onnx",
        "inputs": described(declared["inputs"]),
        "outputs": described(declared["outputs"]),
    }


def check_rows(settings, scorer, graph: str, sizes: dict[str, int]) -> None:
    """413 when the rows the graph will compute (K x N decoder passes for the scorer) exceed the limit."""
    if graph == "scorer":
        limit, reason = scorer.max_work, scorer.limit_reason()
    else:
        limit, reason = settings.max_samples, "setting CVAE_MAX_SAMPLES"
    rows = math.prod(sizes.values())
    if rows > limit:
        counted = " x ".join(f"{dim} {size}" for dim, size in sizes.items())
        raise V2Error(f"{counted} = {rows} rows exceed the limit {limit} ({reason}); send fewer per request.", 413)


def does_not_fit(name: str, declared: dict, inputs) -> V2Error:
    """The protocol's account of tensors that ONNX Runtime refused past every check: the shapes given
    and taken, not ONNX Runtime's own words (those go to the log)."""
    given = ", ".join(f"{t.name} {t.shape}" for t in inputs)
    takes = ", ".join(f"{n} {tensors.dims_text(d)}" for n, d in declared["inputs"].items())
    return V2Error(f"{name} cannot run on {given}: it takes {takes} of {DATATYPE}, each named dimension the same.")


async def run(state, name: str, entry, graph: str, body: InferRequest, binary: bytes) -> tuple[list[str], list]:
    """The outputs to answer and their values: the request's tensors checked against the graph's manifest
    and the row limit before any data is read, then run in chunks under the app's admission."""
    session = entry.inference.model.sessions[graph]
    declared = entry.inference.model.manifest["files"][graph]
    try:
        sizes = tensors.sizes(declared, body.inputs)
        wanted = tensors.outputs(declared, body)
        check_rows(state.settings, entry.inference.scorer, graph, sizes)
        feeds = tensors.feeds(declared, body.inputs, binary)
    except TensorError as error:
        raise V2Error(str(error)) from error

    telemetry.annotate(**{"model.name": name, "model.version": entry.version, "graph": graph})

    async def call(names, part):
        with telemetry.span("model.call", graph=graph, rows=len(next(iter(part.values())))):
            return await in_thread(session.run, names, part)

    work = chunks.run(call, declared, wanted, feeds, sizes, state.settings.score_chunk_rows)
    try:
        values = await state.admission.run(work)
    except Exception as error:
        if type(error).__module__.startswith("onnxruntime"):
            logging.getLogger(__name__).warning("ONNX Runtime refused %s inputs: %s", name, error)
            raise does_not_fit(name, declared, body.inputs) from error
        raise
    if not all(np.isfinite(v).all() for v in values):
        raise V2Error("The outputs are not finite: the inputs lie far outside what the model was trained on.")
    return wanted, values
