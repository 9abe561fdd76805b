"""An image's answer as one row: the names a flat table gives its fields, for batch scoring's Parquet and
the Python client's columns alike.

A nested object's fields become columns named `object_field` (`out_of_distribution.flagged` is
`out_of_distribution_flagged`), and a list of objects (the warnings) the list of their codes.
"""

from __future__ import annotations

import types
import typing


def flatten(answer: dict, prefix: str = "") -> dict:
    """An image's answer (a dict as the service sends it) as one row."""
    row = {}
    for key, value in answer.items():
        if isinstance(value, dict):
            row |= flatten(value, f"{prefix}{key}_")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            row[prefix + key] = [item["code"] for item in value]
        else:
            row[prefix + key] = value
    return row


def columns(model, prefix: str = "") -> dict[str, typing.Any]:
    """The columns of `flatten` applied to an answer of the pydantic `model`, with their types (a list of
    objects: the type of their codes)."""
    found = {}
    for key, field in model.model_fields.items():
        kind = optional(field.annotation)
        if is_model(kind):
            found |= columns(kind, f"{prefix}{key}_")
        elif typing.get_origin(kind) is list and is_model(item := typing.get_args(kind)[0]):
            code = item.model_fields["code"].annotation
            found[prefix + key] = list[code]
        else:
            found[prefix + key] = kind
    return found


def optional(kind):
    """X of `X | None`."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        (kind,) = [arg for arg in typing.get_args(kind) if arg is not type(None)]
    return kind


def is_model(kind) -> bool:
    return isinstance(kind, type) and hasattr(kind, "model_fields")
