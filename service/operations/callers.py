"""Who a request comes from, the same over HTTP and gRPC: its API key, its address, its id."""

from __future__ import annotations

import hmac
import uuid

_REQUEST_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def address_of(client) -> str:
    """A caller known by its address (no API keys): the host of an ASGI client (host, port)."""
    return client[0] if client else "unknown"


def given_key(headers: dict[bytes, bytes]) -> bytes | None:
    """The API key of a request's headers (or gRPC metadata), lower-case names to values: X-API-Key: KEY,
    else Authorization: Bearer KEY."""
    given = headers.get(b"x-api-key")
    authorization = headers.get(b"authorization", b"")
    if given is None and authorization[:7].lower() == b"bearer ":
        given = authorization[7:].strip()
    return given


def which_key(keys: list[bytes], given: bytes) -> int | None:
    """The index of `given` among `keys` (None: not one of them), every key compared in constant time."""
    found = None
    for index, key in enumerate(keys):
        if hmac.compare_digest(given, key):
            found = index
    return found


def request_id_of(given: str) -> str:
    """The id a client gave its request (X-Request-ID), when it is short and plain; else a new one."""
    return given if 0 < len(given) <= 128 and set(given) <= _REQUEST_ID_CHARS else uuid.uuid4().hex
