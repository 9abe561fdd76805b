"""The tensors of the Open Inference Protocol (KServe V2): the request's data model, and its JSON
and binary tensor data in and out. Knows nothing of HTTP; service.oip.protocol turns TensorError into a 400.

Binary tensor data: the body is the JSON request of `Inference-Header-Content-Length` bytes, then
the raw little-endian data of each input that says `"parameters": {"binary_data_size": n}`, in the
order of the inputs. An output goes back the same way when its request says
`"parameters": {"binary_data": true}`, or every output when the request's parameters say
`"binary_data_output": true`.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from service.failures import TensorError

DATATYPE = "FP32"  # every tensor of the three graphs
LITTLE_ENDIAN_FP32 = np.dtype("<f4")
MAX_ELEMENTS = 50_000_000


class Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = Field(None, description="Row-major values; omit when the tensor is sent as binary data.")


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[Tensor] = Field(..., min_length=1)
    outputs: list[RequestedOutput] | None = None


def shape(dims) -> list[int]:
    """A manifest's dimensions with every named (free) one as -1."""
    return [d if isinstance(d, int) else -1 for d in dims]


def dims_text(dims) -> str:
    """A manifest's dimensions as a reader writes them: [K, N, 32]."""
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _binary_size(parameters: dict | None) -> int | None:
    size = (parameters or {}).get("binary_data_size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise TensorError(f"binary_data_size must be a byte count, not {size!r}.")
    return size


def _array(tensor: Tensor, binary: memoryview, offset: int) -> tuple[np.ndarray, int]:
    """One input's values in its shape, and the offset of the next input's binary data."""
    size = _binary_size(tensor.parameters)
    count = math.prod(tensor.shape)
    if size is not None:
        if tensor.data is not None:
            raise TensorError(f"Input {tensor.name!r} has both data and binary_data_size; send one.")
        if size != count * LITTLE_ENDIAN_FP32.itemsize:
            raise TensorError(
                f"Input {tensor.name!r} has binary_data_size {size}; shape {tensor.shape} of FP32 needs "
                f"{count * LITTLE_ENDIAN_FP32.itemsize} bytes."
            )
        if offset + size > len(binary):
            raise TensorError(f"The binary data end before input {tensor.name!r}'s {size} bytes.")
        array = np.frombuffer(binary[offset : offset + size], dtype=LITTLE_ENDIAN_FP32).astype(np.float32)
        if not np.isfinite(array).all():
            raise TensorError(f"Input {tensor.name!r} holds NaN or infinite values.")
        return array.reshape(tensor.shape), offset + size
    if tensor.data is None:
        raise TensorError(f"Input {tensor.name!r} has neither data nor parameters.binary_data_size.")
    try:
        with np.errstate(over="ignore"):  # a number beyond FP32 becomes inf, refused below
            array = np.asarray(tensor.data, dtype=np.float32).reshape(tensor.shape)
    except (ValueError, TypeError, OverflowError) as error:
        problem = f"Input {tensor.name!r}: data do not fill shape {tensor.shape} with numbers ({error})."
        raise TensorError(problem) from error
    if not np.isfinite(array).all():
        _not_a_number(tensor)
    return array, offset


def _not_a_number(tensor: Tensor) -> None:
    """Raise the reason data hold a value that is not a finite number: null (or a string) where a number
    belongs, which numpy reads as NaN, or a number that overflows FP32."""
    values = np.asarray(tensor.data, dtype=object)
    for i, value in enumerate(values.ravel()):
        if value is None or isinstance(value, str):
            where = f"data[{i}]" if values.ndim == 1 else f"value {i} of data (row-major)"
            what = "null" if value is None else f"the string {value!r}"
            raise TensorError(
                f"Input {tensor.name!r}: {where} is {what}, not a number; send every value as a JSON number."
            )
    raise TensorError(f"Input {tensor.name!r} holds NaN, infinite or too large values (FP32 ends at ±3.4e38).")


def sizes(graph: dict, inputs: list[Tensor]) -> dict[str, int]:
    """The size of each named dimension of the graph (`graph`: its manifest entry), e.g. {"N": 4, "K": 100}
    for the scorer, once the inputs are exactly the graph's, in FP32, of its shapes, and agree on every
    named dimension: the scorer's x [N, 784], y [N, 10] and eps [K, N, D] share one N, with no broadcasting.
    Reads no data."""
    expected = {n: shape(s) for n, s in graph["inputs"].items()}
    given = {t.name: t for t in inputs}
    if len(given) < len(inputs):
        raise TensorError(f"Inputs name {[t.name for t in inputs]}: each input may appear once.")
    missing, unknown = set(expected) - set(given), set(given) - set(expected)
    if missing or unknown:
        raise TensorError(
            f"Inputs must be exactly {sorted(expected)}; missing {sorted(missing)}, unknown {sorted(unknown)}."
        )
    bound: dict[str, tuple[int, Tensor]] = {}  # named dimension -> its size, and the input that set it
    for tensor in inputs:
        name, dims = tensor.name, graph["inputs"][tensor.name]
        if tensor.datatype != DATATYPE:
            raise TensorError(
                f"Input {name!r} has datatype {tensor.datatype}; this model takes {DATATYPE} "
                "(convert it, e.g. array.astype(numpy.float32))."
            )
        want = expected[name]
        if len(tensor.shape) != len(want) or any(w not in (-1, s) for w, s in zip(want, tensor.shape)):
            raise TensorError(f"Input {name!r} has shape {tensor.shape}; this model takes {want} (-1: any size).")
        if any(s < 1 for s in tensor.shape) or math.prod(tensor.shape) > MAX_ELEMENTS:
            raise TensorError(f"Input {name!r} has an empty or too large shape {tensor.shape}.")
        for dim, size in zip(dims, tensor.shape):
            if isinstance(dim, int):
                continue
            first = bound.setdefault(dim, (size, tensor))
            if first[0] != size:
                other = first[1]
                raise TensorError(
                    f"Inputs {other.name!r} {other.shape} and {name!r} {tensor.shape} disagree on {dim} "
                    f"({first[0]} and {size}): this model takes "
                    + ", ".join(f"{n} {dims_text(d)}" for n, d in graph["inputs"].items())
                    + f", each {dim} the same (no broadcasting)."
                )
    return {dim: size for dim, (size, _) in bound.items()}


def feeds(graph: dict, inputs: list[Tensor], binary: bytes) -> dict[str, np.ndarray]:
    """The graph's inputs (`graph`: its manifest entry) from the request's tensors and binary data,
    once `sizes` has found them to fit the graph."""
    sizes(graph, inputs)
    found, offset, data = {}, 0, memoryview(binary)
    for tensor in inputs:  # binary data follow the order of the inputs
        found[tensor.name], offset = _array(tensor, data, offset)
    if offset != len(binary):
        raise TensorError(f"{len(binary) - offset} bytes of binary data belong to no input's binary_data_size.")
    return found


def outputs(graph: dict, body: InferRequest) -> list[str]:
    """The outputs to compute: those the request names, each once and each the graph's, else all of them."""
    names = list(graph["outputs"])
    if not body.outputs:
        return names
    wanted = [o.name for o in body.outputs]
    repeated = sorted(n for n, count in Counter(wanted).items() if count > 1)
    if repeated:
        raise TensorError(f"Outputs {repeated} are requested more than once; name each output once.")
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise TensorError(f"Unknown outputs {unknown}; this model gives {names}.")
    return wanted


def binary_outputs(body: InferRequest, wanted: list[str]) -> set[str]:
    """The outputs to send as binary data: asked for one by one, or all by the request's parameters."""
    every = bool((body.parameters or {}).get("binary_data_output", False))
    asked = {o.name: (o.parameters or {}).get("binary_data") for o in body.outputs or []}
    return {name for name in wanted if (asked.get(name) if asked.get(name) is not None else every)}


def encode(names: list[str], values: list[np.ndarray], as_binary: set[str]) -> tuple[list[dict], bytes]:
    """The answer's output tensors, and the binary data of those in `as_binary`, in their order."""
    tensors, chunks = [], []
    for name, value in zip(names, values):
        tensor = {"name": name, "datatype": DATATYPE, "shape": list(value.shape)}
        if name in as_binary:
            chunk = np.ascontiguousarray(value, dtype=LITTLE_ENDIAN_FP32).tobytes()
            tensor["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            tensor["data"] = value.astype(np.float32).ravel().tolist()
        tensors.append(tensor)
    return tensors, b"".join(chunks)
