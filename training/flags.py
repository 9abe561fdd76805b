"""Command-line flags from the configs of training.configs, and argparse types that check a value as the
config does: a bad value is argparse's error, naming the flag, before any work starts."""

from __future__ import annotations

import argparse
from dataclasses import Field, fields

from training.configs import problem


def dest(prefix: str, name: str) -> str:
    """The argparse attribute of the flag --PREFIX-NAME for a config field `name`."""
    return (prefix + name).replace("-", "_")


def checked(f: Field, kind: type):
    """The argparse type of field `f`'s values: `kind`, within the field's limits (training.configs)."""

    def parse(text: str):
        value = kind(text)  # a ValueError here: argparse says "invalid int value"
        if (reason := problem(f, value)) is not None:
            raise argparse.ArgumentTypeError(reason)
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its errors
    return parse


def add_config_flags(parser, config_class, prefix: str = "", aliases: dict[str, str] | None = None) -> None:
    """A flag --PREFIXFIELD-NAME for each field of the dataclass `config_class`, defaulting to the
    field's default and taking the values it takes; `aliases` adds a second, shorter flag for some
    fields (field name -> flag)."""
    aliases = aliases or {}
    for f in fields(config_class):
        default = f.default
        names = ["--" + prefix + f.name.replace("_", "-")] + (["--" + aliases[f.name]] if f.name in aliases else [])
        meaning = f.metadata.get("help")
        options = {"dest": dest(prefix, f.name), "default": default}
        options["help"] = f"{meaning} (default {default})" if meaning else f"default {default}"
        if isinstance(default, bool):
            parser.add_argument(*names, action=argparse.BooleanOptionalAction, **options)
        elif isinstance(default, tuple):
            parser.add_argument(*names, type=checked(f, type(default[0])), nargs="+", **options)
        else:
            parser.add_argument(*names, type=checked(f, type(default)), choices=f.metadata.get("choices"), **options)


def config_from(args: argparse.Namespace, config_class, prefix: str = ""):
    values = {f.name: getattr(args, dest(prefix, f.name)) for f in fields(config_class)}
    for name, value in values.items():
        if isinstance(value, list):
            values[name] = tuple(value)
    return config_class(**values)


def at_least(minimum: int, or_zero: bool = False):
    """The argparse type of a count of at least `minimum` (or 0, meaning all, when `or_zero`)."""

    def count(text: str) -> int:
        value = int(text)
        if value < minimum and not (or_zero and value == 0):
            raise argparse.ArgumentTypeError(f"must be {'0 (all) or ' if or_zero else ''}at least {minimum}")
        return value

    count.__name__ = "int"
    return count


def version(text: str) -> str:
    """--version's value: a version folder's name as the service orders them (numbers and dots)."""
    from service.operations.versions import version_key

    try:
        version_key(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return text


def critic_weight(text: str) -> float:
    """--critic-weight's value, refused by argparse (naming the flag) unless a number in [0, 1]."""
    from service.engine.ood import critic_weight_of

    try:
        value: object = float(text)
    except ValueError:
        value = text  # not a number: critic_weight_of says so
    try:
        return critic_weight_of(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from error


def margin(text: str) -> float:
    """--margin's value: a number of nats above 0."""
    value = float(text)  # a ValueError here: argparse says "invalid margin value"
    if not value > 0:
        raise argparse.ArgumentTypeError("must be above 0")
    return value


def names(text: str) -> list[str]:
    """--class-names' value: names separated by commas."""
    return [name.strip() for name in text.split(",")]
